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

  test('functions.invoke reaches the same functions, with any method and body', async () => {
    const { data, error } = await alice.functions.invoke('greet', { body: { name: 'Ada' } });
    assert.equal(error, null);
    assert.deepEqual(data, { hello: 'Ada', method: 'POST', user: ALICE });
    const text = await anon.functions.invoke('greet?name=Bob', { method: 'GET' });
    assert.equal(text.error, null);
    assert.equal(text.data, 'hello, Bob');
    const invalid = await anon.functions.invoke('greet', { body: { name: 'x'.repeat(41) } });
    assert.equal(invalid.error?.name, 'FunctionsHttpError');
    assert.equal((await invalid.error.context.json()).code, '22P02');
    const teapot = await anon.functions.invoke('teapot');
    assert.equal(teapot.error?.name, 'FunctionsHttpError');
    const response = teapot.error.context;
    assert.equal(response.status, 418);
    assert.equal(response.headers.get('x-brewed'), 'yes');
    assert.equal(response.headers.get('set-cookie'), null, 'a function cannot set cookies');
    assert.deepEqual(await response.json(), { error: 'short and stout' });
    const denied = await anon.functions.invoke('whoami');
    assert.equal(denied.error.context.status, 401);
  });

  test('stable functions answer GET with typed query arguments', async () => {
    const { data, error } = await anon.rpc('double', { n: 21, tags: ['a', 'b,c'] }, { get: true });
    assert.equal(error, null);
    assert.deepEqual(data, { doubled: 42, tags: ['a', 'b', 'c'] });
    const bad = await anon.rpc('double', { n: 'x' }, { get: true });
    assert.equal(bad.error.code, '22P02');
    const volatile = await anon.rpc('quote', { items: [] }, { get: true });
    assert.equal(volatile.error.code, 'PGRST101');
  });

  test("a function's rows take filters, order, paging, select, count and single", async () => {
    const { data, error, count } = await anon
      .rpc('menu', {}, { count: 'exact' })
      .select('name')
      .lt('price', 1000)
      .order('price', { ascending: false })
      .range(0, 0);
    assert.equal(error, null);
    assert.deepEqual(data, [{ name: 'tea' }]);
    assert.equal(count, 2);
    const { data: cheap } = await anon.rpc('menu', { min: 400 }, { get: true }).ilike('name', 'TEA%').select('id');
    assert.deepEqual(cheap, [{ id: 1 }, { id: 3 }]);
    const { data: one } = await anon.rpc('menu').eq('id', 2).single();
    assert.deepEqual(one, { id: 2, name: 'cake', price: 325 });
    const { error: many } = await anon.rpc('menu').single();
    assert.equal(many.code, 'PGRST116');
  });

  test('functions.invoke sends form data, which the function reads as fields', async () => {
    const form = new FormData();
    form.append('note', 'hello');
    form.append('file', new Blob(['a,b\n1,2'], { type: 'text/csv' }), 'rows.csv');
    const { data, error } = await anon.functions.invoke('echo_body', { body: form });
    assert.equal(error, null);
    assert.deepEqual(data.body, {
      note: 'hello',
      file: { filename: 'rows.csv', type: 'text/csv', size: 7, text: 'a,b\n1,2' },
    });
    const { data: text } = await anon.functions.invoke('echo_body', { body: 'plain words' });
    assert.deepEqual(text, { body: 'plain words' });
  });
});
