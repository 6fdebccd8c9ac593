// supabase.rpc() against declared functions, unchanged supabase-js.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { clientsOf, startGatehouse } from './gatehouse.mjs';

const config = fileURLToPath(new URL('./functions.toml', import.meta.url));
const ALICE = '0190c2a4-7e5b-7000-8000-00000000a11c';

describe('functions through supabase.rpc', () => {
  let server;
  let anon;
  let alice;

  before(async () => {
    server = await startGatehouse(config);
    let as;
    ({ anon, as } = clientsOf(server));
    alice = as(ALICE);
  });
  after(async () => server?.stop());

  test('a function computes on the server from validated arguments', async () => {
    const items = [{ product: 'tea', quantity: 2 }, { product: 'cake', quantity: 1, price: 1 }];
    const { data, error } = await anon.rpc('quote', { items });
    assert.equal(error, null);
    assert.deepEqual(data, { total_cents: 1225 }, 'a client-sent price is ignored');
    const thrown = await anon.rpc('quote', { items: [{ product: 'gold', quantity: 1 }] });
    assert.equal(thrown.error.code, 'P0001');
    assert.equal(thrown.error.message, 'unknown product: gold');
    const missing = await anon.rpc('quote', {});
    assert.equal(missing.error.code, '22P02');
    assert.match(missing.error.message, /items/);
    const unknown = await anon.rpc('nothing');
    assert.equal(unknown.error.code, 'PGRST202');
  });

  test('the caller a function sees is the verified one, and roles are enforced', async () => {
    const { data, error } = await alice.rpc('whoami');
    assert.equal(error, null);
    assert.deepEqual(data, { id: ALICE, role: 'authenticated' });
    const refused = await anon.rpc('whoami');
    assert.equal(refused.error.code, '42501');
    assert.equal(refused.status, 401);
  });
});
