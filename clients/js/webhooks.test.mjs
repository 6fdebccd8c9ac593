// Outbound webhooks: changes written through supabase-js reach a Node receiver
// that checks each delivery with the `standardwebhooks` package, in the shape
// of Supabase's database webhooks.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Webhook } from 'standardwebhooks';
import { clientsOf, startGatehouse } from './gatehouse.mjs';

const SECRET = `whsec_${randomBytes(32).toString('base64')}`;

describe('outbound webhooks', () => {
  let receiver;
  let server;
  let service;
  let folder;
  const verified = [];
  const forged = [];

  before(async () => {
    receiver = createServer((request, response) => {
      let body = '';
      request.on('data', (chunk) => (body += chunk));
      request.on('end', () => {
        try {
          const payload = new Webhook(SECRET).verify(body, request.headers);
          verified.push({ id: request.headers['webhook-id'], payload });
          response.writeHead(204).end();
        } catch {
          forged.push(body);
          response.writeHead(400).end();
        }
      });
    });
    await new Promise((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    const { port } = receiver.address();
    folder = mkdtempSync(join(tmpdir(), 'gatehouse-webhooks-'));
    const config = join(folder, 'gatehouse.toml');
    writeFileSync(
      config,
      `[tables.orders]
columns.id = { type = "bigint", primary_key = true }
columns.status = { type = "text", not_null = true }
columns.card_note = { type = "text" }

[[webhooks]]
name = "orders"
table = "orders"
events = ["insert", "update", "delete"]
url = "http://127.0.0.1:${port}/webhooks/orders"
columns = ["id", "status"]
# The receiver runs on this host, on purpose.
allow_private_addresses = true

[jobs]
poll_ms = 50
`,
    );
    server = await startGatehouse(config, { GATEHOUSE_WEBHOOK_SECRET_ORDERS: SECRET });
    ({ service } = clientsOf(server));
  });
  after(async () => {
    await server?.stop();
    receiver?.close();
    if (folder) rmSync(folder, { recursive: true, force: true });
  });

  async function deliveries(count) {
    for (let attempt = 0; attempt < 400; attempt++) {
      if (verified.length >= count) return verified;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error(`${verified.length} of ${count} deliveries arrived`);
  }

  test('each change arrives signed, in Supabase database webhook shape', async () => {
    const inserted = await service.from('orders').insert({ id: 1, status: 'pending', card_note: 'private' });
    assert.equal(inserted.error, null);
    const updated = await service.from('orders').update({ status: 'paid' }).eq('id', 1);
    assert.equal(updated.error, null);
    const deleted = await service.from('orders').delete().eq('id', 1);
    assert.equal(deleted.error, null);

    const got = await deliveries(3);
    assert.deepEqual(forged, []);
    const byType = Object.fromEntries(got.map(({ payload }) => [payload.type, payload]));
    assert.deepEqual(byType.INSERT, {
      type: 'INSERT',
      table: 'orders',
      schema: 'public',
      record: { id: 1, status: 'pending' },
      old_record: null,
    });
    assert.deepEqual(byType.UPDATE.record, { id: 1, status: 'paid' });
    assert.deepEqual(byType.UPDATE.old_record, { id: 1, status: 'pending' });
    assert.deepEqual(byType.DELETE.record, null);
    assert.deepEqual(byType.DELETE.old_record, { id: 1, status: 'paid' });
    assert.equal(new Set(got.map(({ id }) => id)).size, 3, 'each delivery has its own webhook-id');
  });

  test('an upsert that merges into a row arrives as an update', async () => {
    const before = verified.length;
    const created = await service.from('orders').upsert({ id: 10, status: 'pending' });
    assert.equal(created.error, null);
    const merged = await service.from('orders').upsert({ id: 10, status: 'paid' });
    assert.equal(merged.error, null);
    const got = (await deliveries(before + 2)).slice(before).map(({ payload }) => payload);
    const insert = got.find((payload) => payload.type === 'INSERT');
    const update = got.find((payload) => payload.type === 'UPDATE');
    assert.deepEqual(insert.record, { id: 10, status: 'pending' });
    assert.deepEqual(update.record, { id: 10, status: 'paid' });
    assert.deepEqual(update.old_record, { id: 10, status: 'pending' });
  });

  test('a write that fails sends nothing', async () => {
    const before = verified.length;
    const failed = await service.from('orders').insert([
      { id: 2, status: 'pending' },
      { id: 2, status: 'duplicate' },
    ]);
    assert.notEqual(failed.error, null);
    const written = await service.from('orders').insert({ id: 3, status: 'pending' });
    assert.equal(written.error, null);
    const got = await deliveries(before + 1);
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(verified.length, before + 1);
    assert.deepEqual(got.at(-1).payload.record, { id: 3, status: 'pending' });
  });
});
