// supabase-js v2 auth against a real Gatehouse, then the data API with the
// session it gets. (Email confirmation is off here: no mailbox yet.)
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createClient } from '@supabase/supabase-js';
import ws from 'ws';
import { startGatehouse } from './gatehouse.mjs';

const shop = fileURLToPath(new URL('./shop.toml', import.meta.url));
const PASSWORD = 'correct horse battery staple';

describe('auth through supabase-js', () => {
  let server;
  const client = (key) =>
    createClient(server.url, key, {
      auth: { persistSession: false, autoRefreshToken: false },
      realtime: { transport: ws },
    });

  before(async () => {
    server = await startGatehouse(shop);
  });
  after(async () => server?.stop());

  test('sign up, sign in, get the user and the claims, refresh, update, sign out', async () => {
    const alice = client(server.publishableKey);
    const { data: signUp, error: signUpError } = await alice.auth.signUp({ email: 'alice@example.com', password: PASSWORD });
    assert.equal(signUpError, null);
    assert.equal(signUp.user.email, 'alice@example.com');
    assert.ok(signUp.session.access_token);

    const { data: signIn, error } = await alice.auth.signInWithPassword({ email: 'alice@example.com', password: PASSWORD });
    assert.equal(error, null);
    const { data: got } = await alice.auth.getUser();
    assert.equal(got.user.id, signIn.user.id);
    const { data: claims, error: claimsError } = await alice.auth.getClaims();
    assert.equal(claimsError, null);
    assert.equal(claims.claims.sub, signIn.user.id);
    assert.equal(claims.claims.role, 'authenticated');

    const { data: refreshed, error: refreshError } = await alice.auth.refreshSession();
    assert.equal(refreshError, null);
    assert.notEqual(refreshed.session.refresh_token, signIn.session.refresh_token);

    const { data: updated, error: updateError } = await alice.auth.updateUser({ data: { name: 'Alice' } });
    assert.equal(updateError, null);
    assert.equal(updated.user.user_metadata.name, 'Alice');

    // The session drives the data API: her own order, invisible to others.
    const { data: order, error: orderError } = await alice.from('orders').insert({ note: 'first' }).select().single();
    assert.equal(orderError, null);
    assert.equal(order.user_id, signIn.user.id);

    const { error: signOutError } = await alice.auth.signOut({ scope: 'local' });
    assert.equal(signOutError, null);
    const stale = createClient(server.url, server.publishableKey, {
      accessToken: async () => refreshed.session.access_token,
      realtime: { transport: ws },
    });
    const { error: revoked } = await stale.from('orders').select();
    assert.equal(revoked.code, 'PGRST301', 'a signed-out session’s token is refused');
  });

  test('wrong passwords and unknown emails get the same answer', async () => {
    const anon = client(server.publishableKey);
    const wrong = await anon.auth.signInWithPassword({ email: 'alice@example.com', password: 'not it at all' });
    const unknown = await anon.auth.signInWithPassword({ email: 'nobody@example.com', password: 'not it at all' });
    assert.equal(wrong.error.code, 'invalid_credentials');
    assert.equal(unknown.error.code, wrong.error.code);
    assert.equal(unknown.error.message, wrong.error.message);
  });

  test('anonymous sign-in', async () => {
    const guest = client(server.publishableKey);
    const { data, error } = await guest.auth.signInAnonymously();
    assert.equal(error, null);
    assert.equal(data.user.is_anonymous, true);
  });

  test('sign out the other sessions', async () => {
    const here = client(server.publishableKey);
    const there = client(server.publishableKey);
    await here.auth.signUp({ email: 'dana@example.com', password: PASSWORD });
    await there.auth.signInWithPassword({ email: 'dana@example.com', password: PASSWORD });
    const { error } = await here.auth.signOut({ scope: 'others' });
    assert.equal(error, null);
    assert.equal((await here.auth.getUser()).error, null, 'this session lives on');
    assert.ok((await there.auth.getUser()).error, 'the other one ended');
  });

  test('sign out everywhere', async () => {
    const first = client(server.publishableKey);
    const second = client(server.publishableKey);
    await first.auth.signUp({ email: 'bob@example.com', password: PASSWORD });
    await second.auth.signInWithPassword({ email: 'bob@example.com', password: PASSWORD });
    assert.equal((await second.auth.getUser()).error, null);
    await first.auth.signOut({ scope: 'global' });
    const { error } = await second.auth.getUser();
    assert.ok(error, 'the other session ended too');
  });

  test('the admin API with the secret key', async () => {
    const admin = client(server.secretKey).auth.admin;
    const { data: created, error } = await admin.createUser({
      email: 'carol@example.com',
      password: PASSWORD,
      email_confirm: true,
      user_metadata: { plan: 'pro' },
    });
    assert.equal(error, null);
    const { data: listed } = await admin.listUsers();
    assert.ok(listed.users.some((user) => user.id === created.user.id));
    const { data: fetched } = await admin.getUserById(created.user.id);
    assert.equal(fetched.user.user_metadata.plan, 'pro');
    const { error: banError } = await admin.updateUserById(created.user.id, { ban_duration: '1h' });
    assert.equal(banError, null);
    const carol = client(server.publishableKey);
    const { error: banned } = await carol.auth.signInWithPassword({ email: 'carol@example.com', password: PASSWORD });
    assert.equal(banned.code, 'user_banned');
    const { error: deleteError } = await admin.deleteUser(created.user.id);
    assert.equal(deleteError, null);
    const { error: notAdmin } = await client(server.publishableKey).auth.admin.listUsers();
    assert.ok(notAdmin);
  });
});
