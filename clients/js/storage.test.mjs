// storage-js (inside supabase-js v2), unchanged, against a real Gatehouse: on
// SQLite with a local disk, and with GATEHOUSE_DATABASE_URL and
// GATEHOUSE_TEST_S3_URL on PostgreSQL with an S3-compatible server (moto in CI).
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createServer, connect } from 'node:net';
import { randomBytes } from 'node:crypto';
import * as tus from 'tus-js-client';
import { clientsOf, startGatehouse } from './gatehouse.mjs';

const ALICE = '0190c2a4-7e5b-7000-8000-00000000a11c';
const BOB = '0190c2a4-7e5b-7000-8000-000000000b0b';
const PNG = Buffer.from('89504e470d0a1a0a0000000d494844520000000100000001080600000000', 'hex');

/// A TCP relay to `target` that cuts the first PATCH's connection once
/// `cutAfter` bytes of it have passed, and notes each PATCH's Upload-Offset.
async function cuttingRelay(target, cutAfter) {
  const { hostname, port } = new URL(target);
  const offsets = [];
  let cut = false;
  const relay = createServer((client) => {
    const upstream = connect(Number(port), hostname);
    let patchBytes = -1;
    client.on('data', (chunk) => {
      const text = chunk.toString('latin1');
      if (text.startsWith('PATCH ')) {
        offsets.push(Number(text.match(/upload-offset: (\d+)/i)?.[1]));
        patchBytes = 0;
      }
      if (patchBytes >= 0) patchBytes += chunk.length;
      if (!cut && patchBytes > cutAfter) {
        cut = true;
        client.destroy();
        upstream.destroy();
        return;
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk) => client.write(chunk));
    for (const [from, to] of [[client, upstream], [upstream, client]]) {
      from.on('error', () => to.destroy());
      from.on('close', () => to.destroy());
    }
  });
  await new Promise((resolve) => relay.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${relay.address().port}`,
    offsets,
    close: () => relay.close(),
  };
}

/// A TUS upload with tus-js-client, as Supabase documents it; resolves to
/// the upload URL or rejects with the failing response's status.
function tusUpload(url, token, apikey, bytes, metadata, options = {}) {
  return new Promise((resolve, reject) => {
    const upload = new tus.Upload(bytes, {
      endpoint: `${url}/storage/v1/upload/resumable`,
      retryDelays: [0, 100, 200],
      headers: { authorization: `Bearer ${token}`, apikey, 'x-upsert': 'true' },
      metadata,
      removeFingerprintOnSuccess: true,
      onError: (error) => reject(Object.assign(error, { status: error.originalResponse?.getStatus() })),
      onSuccess: () => resolve(upload.url),
      ...options,
    });
    upload.start();
  });
}

/// storage.toml, on S3 when the run has one (a fresh bucket on moto).
async function configFile() {
  const base = fileURLToPath(new URL('./storage.toml', import.meta.url));
  const s3 = process.env.GATEHOUSE_TEST_S3_URL;
  if (!s3 || !process.env.GATEHOUSE_DATABASE_URL) return { file: base, env: {} };
  const bucket = `gatehouse-js-${Date.now()}`;
  const created = await fetch(`${s3}/${bucket}`, { method: 'PUT' });
  assert.ok(created.ok, `creating ${bucket} on ${s3}`);
  const file = join(mkdtempSync(join(tmpdir(), 'gatehouse-js-s3-')), 'storage.toml');
  // Top-level keys first (the schema file, now by absolute path), then [storage].
  const tables = fileURLToPath(new URL('../../examples/shop/tables.toml', import.meta.url));
  const policies = readFileSync(base, 'utf8').replace(/^schema_files = .*$/m, '');
  writeFileSync(
    file,
    `schema_files = ["${tables}"]\n[storage]\nbackend = "s3"\ns3_bucket = "${bucket}"\ns3_endpoint = "${s3}"\n${policies}`,
  );
  return {
    file,
    env: { GATEHOUSE_S3_ACCESS_KEY_ID: 'testing', GATEHOUSE_S3_SECRET_ACCESS_KEY: 'testing' },
  };
}

describe('storage through supabase-js', () => {
  let server;
  let service;
  let anon;
  let alice;
  let bob;

  before(async () => {
    const { file, env } = await configFile();
    server = await startGatehouse(file, env);
    let as;
    ({ service, anon, as } = clientsOf(server));
    alice = as(ALICE).storage.from('avatars');
    bob = as(BOB).storage.from('avatars');
    for (const [id, options] of [
      ['avatars', { public: false }],
      ['site', { public: true }],
    ]) {
      const { error } = await service.storage.createBucket(id, options);
      assert.equal(error, null);
    }
  });

  after(async () => server?.stop());

  test('upload, upsert, download, info, exists', async () => {
    const path = `${ALICE}/notes.txt`;
    const first = await alice.upload(path, 'first', { contentType: 'text/plain' });
    assert.equal(first.error, null);
    assert.equal(first.data.path, path);
    assert.equal(first.data.fullPath, `avatars/${path}`);
    const taken = await alice.upload(path, 'again', { contentType: 'text/plain' });
    // As Supabase Storage answers: HTTP 400, the real status in the body.
    assert.equal(taken.error.statusCode, '409');
    assert.equal(taken.error.status, 400);
    const upserted = await alice.upload(path, 'second', { contentType: 'text/plain', upsert: true });
    assert.equal(upserted.error, null);
    const { data: blob, error } = await alice.download(path);
    assert.equal(error, null);
    assert.equal(await blob.text(), 'second');

    // A Blob goes as a multipart form; its type comes along.
    const picture = await alice.upload(`${ALICE}/me.png`, new Blob([PNG], { type: 'image/png' }));
    assert.equal(picture.error, null);
    const info = await alice.info(`${ALICE}/me.png`);
    assert.equal(info.error, null);
    assert.equal(info.data.contentType, 'image/png');
    assert.equal(info.data.size, PNG.length);
    assert.equal((await alice.exists(`${ALICE}/me.png`)).data, true);
    assert.equal((await alice.exists(`${ALICE}/nothing.png`)).data, false);
    const updated = await alice.update(`${ALICE}/me.png`, new Blob([PNG, PNG], { type: 'image/png' }));
    assert.equal(updated.error, null);
    assert.equal((await alice.info(`${ALICE}/me.png`)).data.size, 2 * PNG.length);
  });

  test('list, move, copy, remove', async () => {
    for (const name of ['a.txt', 'b.txt', 'sub/c.txt']) {
      const { error } = await alice.upload(`${ALICE}/dir/${name}`, name, { contentType: 'text/plain' });
      assert.equal(error, null);
    }
    const { data: listed, error } = await alice.list(`${ALICE}/dir`, { sortBy: { column: 'name', order: 'desc' } });
    assert.equal(error, null);
    assert.deepEqual(listed.map((entry) => entry.name), ['sub', 'b.txt', 'a.txt']);
    assert.equal(listed[0].id, null, 'a folder');
    assert.equal(listed[1].metadata.size, 5);
    const searched = await alice.list(`${ALICE}/dir`, { search: 'a' });
    assert.deepEqual(searched.data.map((entry) => entry.name), ['a.txt']);

    const moved = await alice.move(`${ALICE}/dir/a.txt`, `${ALICE}/dir/moved.txt`);
    assert.equal(moved.error, null);
    const copied = await alice.copy(`${ALICE}/dir/b.txt`, `${ALICE}/dir/copy.txt`);
    assert.equal(copied.error, null);
    assert.equal(copied.data.path, `avatars/${ALICE}/dir/copy.txt`);
    const { data: copy } = await alice.download(`${ALICE}/dir/copy.txt`);
    assert.equal(await copy.text(), 'b.txt');
    const names = (await alice.list(`${ALICE}/dir`)).data.map((entry) => entry.name);
    assert.deepEqual(names, ['b.txt', 'copy.txt', 'moved.txt', 'sub']);

    const removed = await alice.remove([`${ALICE}/dir/moved.txt`, `${ALICE}/dir/copy.txt`]);
    assert.equal(removed.error, null);
    assert.equal(removed.data.length, 2);
    const left = (await alice.list(`${ALICE}/dir`)).data.map((entry) => entry.name);
    assert.deepEqual(left, ['b.txt', 'sub']);
  });

  test('signed download and upload URLs', async () => {
    await alice.upload(`${ALICE}/signed.txt`, 'for a link', { contentType: 'text/plain' });
    const { data, error } = await alice.createSignedUrl(`${ALICE}/signed.txt`, 60);
    assert.equal(error, null);
    const fetched = await fetch(data.signedUrl);
    assert.equal(fetched.status, 200);
    assert.equal(await fetched.text(), 'for a link');
    const forged = await fetch(data.signedUrl.replace('signed.txt', 'notes.txt'));
    assert.equal(forged.status, 400);
    const asDownload = await alice.createSignedUrl(`${ALICE}/signed.txt`, 60, { download: 'x.txt' });
    const attachment = await fetch(asDownload.data.signedUrl);
    assert.match(attachment.headers.get('content-disposition'), /^attachment; filename="x\.txt"/);

    const many = await alice.createSignedUrls([`${ALICE}/signed.txt`, `${BOB}/nope.txt`], 60);
    assert.equal(many.error, null);
    assert.equal(many.data[0].error, null);
    assert.ok(many.data[0].signedUrl);
    assert.ok(many.data[1].error);

    const upload = await alice.createSignedUploadUrl(`${ALICE}/dropped.txt`);
    assert.equal(upload.error, null);
    assert.ok(upload.data.token);
    // Anyone holding the URL may upload once, to that path only.
    const dropped = await anon.storage
      .from('avatars')
      .uploadToSignedUrl(`${ALICE}/dropped.txt`, upload.data.token, 'via signed url', { contentType: 'text/plain' });
    assert.equal(dropped.error, null);
    assert.equal(dropped.data.fullPath, `avatars/${ALICE}/dropped.txt`);
    const { data: stored } = await alice.download(`${ALICE}/dropped.txt`);
    assert.equal(await stored.text(), 'via signed url');
    const elsewhere = await anon.storage
      .from('avatars')
      .uploadToSignedUrl(`${ALICE}/other.txt`, upload.data.token, 'x');
    assert.ok(elsewhere.error);
  });

  test('public buckets: getPublicUrl works without a key; writing still needs a policy', async () => {
    const site = service.storage.from('site');
    const { error } = await site.upload('index.css', 'body{}', { contentType: 'text/css' });
    assert.equal(error, null);
    const { data } = anon.storage.from('site').getPublicUrl('index.css');
    const fetched = await fetch(data.publicUrl);
    assert.equal(fetched.status, 200);
    assert.equal(await fetched.text(), 'body{}');
    assert.equal(fetched.headers.get('x-content-type-options'), 'nosniff');
    const refused = await anon.storage.from('site').upload('evil.css', 'x');
    assert.ok(refused.error);
    const privateUrl = anon.storage.from('avatars').getPublicUrl(`${ALICE}/notes.txt`).data.publicUrl;
    const hidden = await fetch(privateUrl);
    assert.equal(hidden.status, 400);
    assert.equal((await hidden.json()).statusCode, '404');
  });

  test("another user's objects can be neither read, listed, overwritten nor removed", async () => {
    const path = `${ALICE}/private.txt`;
    assert.equal((await alice.upload(path, 'mine', { contentType: 'text/plain' })).error, null);
    const read = await bob.download(path);
    assert.ok(read.error);
    const listed = await bob.list(ALICE);
    assert.deepEqual(listed.data, []);
    const written = await bob.upload(path, 'theirs', { upsert: true });
    assert.ok(written.error);
    assert.equal(written.error.statusCode, '403');
    const replaced = await bob.update(path, 'theirs');
    assert.ok(replaced.error);
    const planted = await bob.upload(`${ALICE}/planted.txt`, 'x');
    assert.ok(planted.error);
    const removed = await bob.remove([path]);
    assert.deepEqual(removed.data, []);
    const moved = await bob.move(path, `${BOB}/stolen.txt`);
    assert.ok(moved.error);
    const signed = await bob.createSignedUrl(path, 60);
    assert.ok(signed.error);
    const anonymous = await anon.storage.from('avatars').download(path);
    assert.ok(anonymous.error);
    const { data } = await alice.download(path);
    assert.equal(await data.text(), 'mine');
  });

  test('resumable (TUS) uploads resume after the connection is cut', async () => {
    const bytes = randomBytes(3 << 20);
    const relay = await cuttingRelay(server.url, 1 << 20);
    try {
      const path = `${ALICE}/resumed.bin`;
      const metadata = { bucketName: 'avatars', objectName: path, contentType: 'application/octet-stream' };
      await tusUpload(relay.url, server.tokenFor(ALICE), server.publishableKey, bytes, metadata);
      assert.equal(relay.offsets[0], 0);
      assert.ok(relay.offsets.length >= 2, `the upload resumed: ${relay.offsets}`);
      assert.ok(relay.offsets.at(-1) > 0, `bytes before the cut were kept: ${relay.offsets}`);
      const { data, error } = await alice.download(path);
      assert.equal(error, null);
      assert.ok(Buffer.from(await data.arrayBuffer()).equals(bytes));
    } finally {
      relay.close();
    }
    // Supabase's own recipe: the first bytes with the creation, 6 MB chunks
    // (here smaller, to make several), replacing the object with x-upsert.
    const small = randomBytes(200_000);
    const metadata = { bucketName: 'avatars', objectName: `${ALICE}/resumed.bin`, contentType: 'application/octet-stream', cacheControl: '3600' };
    await tusUpload(server.url, server.tokenFor(ALICE), server.publishableKey, small, metadata, {
      uploadDataDuringCreation: true,
      chunkSize: 64 * 1024,
    });
    const { data } = await alice.download(`${ALICE}/resumed.bin`);
    assert.ok(Buffer.from(await data.arrayBuffer()).equals(small));
  });

  test("a resumable upload into another user's folder is refused at creation", async () => {
    const metadata = { bucketName: 'avatars', objectName: `${ALICE}/planted.bin`, contentType: 'application/octet-stream' };
    await assert.rejects(
      tusUpload(server.url, server.tokenFor(BOB), server.publishableKey, randomBytes(1000), metadata),
      (error) => error.status === 403,
    );
    const created = await fetch(`${server.url}/storage/v1/upload/resumable`, {
      method: 'POST',
      headers: {
        apikey: server.publishableKey,
        authorization: `Bearer ${server.tokenFor(ALICE)}`,
        'tus-resumable': '1.0.0',
        'upload-length': '10',
        'upload-metadata': `bucketName ${Buffer.from('avatars').toString('base64')},objectName ${Buffer.from(`${ALICE}/mine.bin`).toString('base64')}`,
      },
    });
    assert.equal(created.status, 201);
    const location = new URL(created.headers.get('location'), server.url);
    // Bob cannot continue, inspect or end Alice's upload, even with its URL.
    const as = (token, method, headers = {}) =>
      fetch(location, { method, headers: { apikey: server.publishableKey, authorization: `Bearer ${token}`, 'tus-resumable': '1.0.0', ...headers } });
    const patchHeaders = { 'content-type': 'application/offset+octet-stream', 'upload-offset': '0' };
    assert.equal((await as(server.tokenFor(BOB), 'HEAD')).status, 404);
    assert.equal((await fetch(location, { method: 'PATCH', body: 'x'.repeat(10), headers: { apikey: server.publishableKey, authorization: `Bearer ${server.tokenFor(BOB)}`, 'tus-resumable': '1.0.0', ...patchHeaders } })).status, 404);
    assert.equal((await as(server.tokenFor(BOB), 'DELETE')).status, 404);
    assert.equal((await as(server.tokenFor(ALICE), 'HEAD')).headers.get('upload-offset'), '0');
    assert.equal((await as(server.tokenFor(ALICE), 'DELETE')).status, 204);
    assert.equal((await as(server.tokenFor(ALICE), 'HEAD')).status, 404);
  });
});
