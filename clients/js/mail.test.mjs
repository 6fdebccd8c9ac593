// The email flows end to end: supabase-js calls, a real SMTP server (aiosmtpd),
// and the links and codes read out of the delivered messages.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createClient } from '@supabase/supabase-js';
import ws from 'ws';
import { startGatehouse, startMailbox } from './gatehouse.mjs';

const config = fileURLToPath(new URL('./mail.toml', import.meta.url));
const PASSWORD = 'correct horse battery staple';

describe('email flows through supabase-js and SMTP', () => {
  let server;
  let mailbox;
  const client = () =>
    createClient(server.url, server.publishableKey, {
      auth: { persistSession: false, autoRefreshToken: false },
      realtime: { transport: ws },
    });

  before(async () => {
    mailbox = await startMailbox();
    server = await startGatehouse(config, { GATEHOUSE_SMTP_URL: mailbox.url });
  });
  after(async () => {
    await server?.stop();
    mailbox?.stop();
  });

  test('sign-up is confirmed through the link in the email', async () => {
    const supabase = client();
    const { data, error } = await supabase.auth.signUp({
      email: 'pat@example.com',
      password: PASSWORD,
      options: { emailRedirectTo: 'http://localhost:3000/welcome' },
    });
    assert.equal(error, null);
    assert.equal(data.session, null, 'no session before confirmation');
    const refused = await supabase.auth.signInWithPassword({ email: 'pat@example.com', password: PASSWORD });
    assert.equal(refused.error.code, 'email_not_confirmed');

    const mail = await mailbox.next('pat@example.com');
    assert.match(mail.raw, /Subject: Confirm your email/);
    const opened = await fetch(mail.link, { redirect: 'manual' });
    assert.equal(opened.status, 303);
    const location = opened.headers.get('location');
    assert.ok(location.startsWith('http://localhost:3000/welcome#access_token='), location);

    const { error: signInError } = await supabase.auth.signInWithPassword({ email: 'pat@example.com', password: PASSWORD });
    assert.equal(signInError, null);
  });

  test('password recovery by code, then a new password', async () => {
    const supabase = client();
    const { error } = await supabase.auth.resetPasswordForEmail('pat@example.com');
    assert.equal(error, null);
    const mail = await mailbox.next('pat@example.com');
    assert.match(mail.raw, /Subject: Reset your password/);
    const { data, error: verifyError } = await supabase.auth.verifyOtp({ email: 'pat@example.com', token: mail.code, type: 'recovery' });
    assert.equal(verifyError, null);
    assert.ok(data.session.access_token);
    const { error: updateError } = await supabase.auth.updateUser({ password: 'a brand new passphrase' });
    assert.equal(updateError, null);
    const { error: signInError } = await client().auth.signInWithPassword({ email: 'pat@example.com', password: 'a brand new passphrase' });
    assert.equal(signInError, null);
    const { error: unknown } = await supabase.auth.resetPasswordForEmail('nobody@example.com');
    assert.equal(unknown, null, 'the same answer for an unknown address');
  });

  test('magic code sign-in creates the user', async () => {
    const supabase = client();
    const { error } = await supabase.auth.signInWithOtp({ email: 'quinn@example.com' });
    assert.equal(error, null);
    const mail = await mailbox.next('quinn@example.com');
    const { data, error: verifyError } = await supabase.auth.verifyOtp({ email: 'quinn@example.com', token: mail.code, type: 'email' });
    assert.equal(verifyError, null);
    assert.equal(data.user.email, 'quinn@example.com');
    const { data: order, error: orderError } = await supabase.from('orders').insert({ note: 'by magic' }).select().single();
    assert.equal(orderError, null);
    assert.equal(order.user_id, data.user.id);
  });

  test('an email change needs a nonce and both addresses', async () => {
    const supabase = client();
    await supabase.auth.signInWithPassword({ email: 'pat@example.com', password: 'a brand new passphrase' });
    const bare = await supabase.auth.updateUser({ email: 'pat@new.example' });
    assert.equal(bare.error.code, 'current_password_required', 'a session alone cannot move the account');
    const { error: reauthError } = await supabase.auth.reauthenticate();
    assert.equal(reauthError, null);
    const nonce = (await mailbox.next('pat@example.com', 'Your verification code')).code;
    const { data: asked, error } = await supabase.auth.updateUser({ email: 'pat@new.example', nonce });
    assert.equal(error, null);
    assert.equal(asked.user.email, 'pat@example.com');
    assert.equal(asked.user.new_email, 'pat@new.example');
    const toOld = await mailbox.next('pat@example.com', 'Confirm the change of your email');
    assert.match(toOld.raw, /Subject: Confirm the change of your email/);
    const toNew = await mailbox.next('pat@new.example', 'Confirm your new email');
    assert.match(toNew.raw, /Subject: Confirm your new email/);
    const half = await fetch(toNew.link, { redirect: 'manual' });
    assert.equal(half.status, 303);
    assert.match(half.headers.get('location'), /#message=/);
    const early = await client().auth.signInWithPassword({ email: 'pat@new.example', password: 'a brand new passphrase' });
    assert.ok(early.error, 'not moved until the old address confirms');
    const { data: done, error: verifyError } = await client().auth.verifyOtp({
      email: 'pat@example.com', token: toOld.code, type: 'email_change',
    });
    assert.equal(verifyError, null);
    assert.equal(done.user.email, 'pat@new.example');
    const { error: signInError } = await client().auth.signInWithPassword({ email: 'pat@new.example', password: 'a brand new passphrase' });
    assert.equal(signInError, null);
  });

  test('a new password with the nonce reauthenticate() emails', async () => {
    const supabase = client();
    const { error: signUpError } = await supabase.auth.signUp({ email: 'noor@example.com', password: PASSWORD });
    assert.equal(signUpError, null);
    const confirm = await mailbox.next('noor@example.com');
    assert.equal((await fetch(confirm.link, { redirect: 'manual' })).status, 303);
    await supabase.auth.signInWithPassword({ email: 'noor@example.com', password: PASSWORD });
    const bare = await supabase.auth.updateUser({ password: 'another fine passphrase' });
    assert.equal(bare.error.code, 'current_password_required');
    assert.equal((await supabase.auth.reauthenticate()).error, null);
    const nonce = (await mailbox.next('noor@example.com', 'Your verification code')).code;
    const wrong = await supabase.auth.updateUser({ password: 'another fine passphrase', nonce: '000000' === nonce ? '111111' : '000000' });
    assert.equal(wrong.error.code, 'reauthentication_not_valid');
    const { error } = await supabase.auth.updateUser({ password: 'another fine passphrase', nonce });
    assert.equal(error, null);
    const { error: signInError } = await client().auth.signInWithPassword({ email: 'noor@example.com', password: 'another fine passphrase' });
    assert.equal(signInError, null);
  });

  test('an anonymous user becomes permanent once the new address confirms', async () => {
    const supabase = client();
    const { data: anon, error } = await supabase.auth.signInAnonymously();
    assert.equal(error, null);
    const { data: asked, error: askError } = await supabase.auth.updateUser({ email: 'omar@example.com', password: PASSWORD });
    assert.equal(askError, null);
    assert.equal(asked.user.is_anonymous, true, 'not until the address is confirmed');
    assert.equal(asked.user.new_email, 'omar@example.com');
    const early = await client().auth.signInWithPassword({ email: 'omar@example.com', password: PASSWORD });
    assert.ok(early.error);
    const mail = await mailbox.next('omar@example.com', 'Confirm your new email');
    const { data: done, error: verifyError } = await client().auth.verifyOtp({
      email: 'omar@example.com', token: mail.code, type: 'email_change',
    });
    assert.equal(verifyError, null);
    assert.equal(done.user.id, anon.user.id);
    assert.equal(done.user.is_anonymous, false);
    const { data: signedIn, error: signInError } = await client().auth.signInWithPassword({ email: 'omar@example.com', password: PASSWORD });
    assert.equal(signInError, null);
    assert.equal(signedIn.user.id, anon.user.id);
  });

  test('admin generateLink returns the link instead of sending it', async () => {
    const admin = createClient(server.url, server.secretKey, {
      auth: { persistSession: false, autoRefreshToken: false },
      realtime: { transport: ws },
    }).auth.admin;
    const { data, error } = await admin.generateLink({ type: 'magiclink', email: 'quinn@example.com' });
    assert.equal(error, null);
    assert.ok(data.properties.action_link.includes('/auth/v1/verify?token='));
    const { data: verified, error: verifyError } = await client().auth.verifyOtp({
      token_hash: data.properties.hashed_token,
      type: 'magiclink',
    });
    assert.equal(verifyError, null);
    assert.equal(verified.user.email, 'quinn@example.com');
  });

  test('a redirect outside the allow-list is refused', async () => {
    const { error } = await client().auth.resetPasswordForEmail('pat@example.com', { redirectTo: 'https://evil.example/' });
    assert.equal(error.code, 'validation_failed');
  });
});
