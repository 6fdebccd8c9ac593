// supabase-js v2's auth.mfa against a real Gatehouse and examples/shop, with
// the codes made by an independent TOTP implementation (otpauth from npm).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createClient } from '@supabase/supabase-js';
import * as OTPAuth from 'otpauth';
import ws from 'ws';
import { startGatehouse } from './gatehouse.mjs';

const shop = fileURLToPath(new URL('./shop.toml', import.meta.url));
const PASSWORD = 'correct horse battery staple';

/// The code an authenticator app shows for `secret`, `steps` periods from now.
const codeFor = (secret, steps = 0) =>
  new OTPAuth.TOTP({ secret: OTPAuth.Secret.fromBase32(secret), digits: 6, period: 30, algorithm: 'SHA1' })
    .generate({ timestamp: Date.now() + steps * 30_000 });

describe('auth.mfa through supabase-js', () => {
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

  async function signedUp(email) {
    const user = client(server.publishableKey);
    const { error } = await user.auth.signUp({ email, password: PASSWORD });
    assert.equal(error, null);
    return user;
  }

  test('enrol, challenge, verify: aal2 opens the table an aal1 session cannot read', async () => {
    const pat = await signedUp('pat-mfa@example.com');
    const { data: enrolled, error } = await pat.auth.mfa.enroll({ factorType: 'totp', friendlyName: 'Phone' });
    assert.equal(error, null);
    assert.equal(enrolled.type, 'totp');
    assert.equal(enrolled.friendly_name, 'Phone');
    assert.match(enrolled.totp.qr_code, /^data:image\/svg\+xml;utf-8,<\?xml|^data:image\/svg\+xml;utf-8,<svg/);
    assert.match(enrolled.totp.uri, /^otpauth:\/\/totp\/.*pat-mfa%40example\.com\?secret=/);
    const parsed = OTPAuth.URI.parse(enrolled.totp.uri);
    assert.equal(parsed.secret.base32.replace(/=+$/, ''), enrolled.totp.secret);

    let { data: factors } = await pat.auth.mfa.listFactors();
    assert.equal(factors.all.length, 1);
    assert.equal(factors.all[0].status, 'unverified');
    assert.deepEqual(factors.totp, []);
    let { data: level } = await pat.auth.mfa.getAuthenticatorAssuranceLevel();
    assert.deepEqual([level.currentLevel, level.nextLevel], ['aal1', 'aal1']);

    // At aal1 the cards table is closed, however the row is written.
    const card = { label: 'Visa', last4: '4242' };
    const refused = await pat.from('payment_methods').insert(card);
    assert.ok(refused.error, 'an aal1 session cannot write');

    const { data: challenge, error: challengeError } = await pat.auth.mfa.challenge({ factorId: enrolled.id });
    assert.equal(challengeError, null);
    assert.ok(challenge.expires_at > Date.now() / 1000);
    const wrong = await pat.auth.mfa.verify({ factorId: enrolled.id, challengeId: challenge.id, code: '000000' === codeFor(enrolled.totp.secret) ? '111111' : '000000' });
    assert.equal(wrong.error?.code, 'mfa_verification_failed');
    const code = codeFor(enrolled.totp.secret);
    const { data: verified, error: verifyError } = await pat.auth.mfa.verify({ factorId: enrolled.id, challengeId: challenge.id, code });
    assert.equal(verifyError, null);
    assert.ok(verified.access_token);

    ({ data: level } = await pat.auth.mfa.getAuthenticatorAssuranceLevel());
    assert.deepEqual([level.currentLevel, level.nextLevel], ['aal2', 'aal2']);
    assert.deepEqual(level.currentAuthenticationMethods.map((m) => m.method), ['totp', 'password']);
    ({ data: factors } = await pat.auth.mfa.listFactors());
    assert.equal(factors.totp.length, 1);
    assert.equal(factors.totp[0].status, 'verified');

    const written = await pat.from('payment_methods').insert(card).select('label, last4');
    assert.equal(written.error, null);
    assert.deepEqual(written.data, [card]);

    // The same code again, on a fresh challenge: refused (once per step).
    const replay = await pat.auth.mfa.challengeAndVerify({ factorId: enrolled.id, code });
    assert.equal(replay.error?.code, 'mfa_verification_failed');

    // A password alone is aal1 again: the cards are out of sight, the factor
    // cannot be removed, until a code raises the session.
    const phone = client(server.publishableKey);
    await phone.auth.signInWithPassword({ email: 'pat-mfa@example.com', password: PASSWORD });
    ({ data: level } = await phone.auth.mfa.getAuthenticatorAssuranceLevel());
    assert.deepEqual([level.currentLevel, level.nextLevel], ['aal1', 'aal2']);
    const hidden = await phone.from('payment_methods').select('label');
    assert.equal(hidden.error, null);
    assert.deepEqual(hidden.data, []);
    const stuck = await phone.auth.mfa.unenroll({ factorId: enrolled.id });
    assert.equal(stuck.error?.code, 'insufficient_aal');
    const raised = await phone.auth.mfa.challengeAndVerify({ factorId: enrolled.id, code: codeFor(enrolled.totp.secret, 1) });
    assert.equal(raised.error, null);
    const seen = await phone.from('payment_methods').select('label');
    assert.deepEqual(seen.data, [{ label: 'Visa' }]);
    const { data: removed, error: removeError } = await phone.auth.mfa.unenroll({ factorId: enrolled.id });
    assert.equal(removeError, null);
    assert.equal(removed.id, enrolled.id);
  });

  test('wrong codes lock the factor, and the admin API lists and deletes factors', async () => {
    const sam = await signedUp('sam-mfa@example.com');
    const { data: enrolled } = await sam.auth.mfa.enroll({ factorType: 'totp' });
    const { data: challenge } = await sam.auth.mfa.challenge({ factorId: enrolled.id });
    const right = codeFor(enrolled.totp.secret);
    const wrong = right === '123456' ? '654321' : '123456';
    const answers = [];
    for (let i = 0; i < 5; i++) {
      const { error } = await sam.auth.mfa.verify({ factorId: enrolled.id, challengeId: challenge.id, code: wrong });
      answers.push(error?.status);
    }
    assert.deepEqual(answers, [422, 422, 422, 422, 429]);
    const locked = await sam.auth.mfa.verify({ factorId: enrolled.id, challengeId: challenge.id, code: right });
    assert.equal(locked.error?.status, 429, 'locked: even the right code waits');

    const admin = client(server.secretKey);
    const { data: { user } } = await sam.auth.getUser();
    const { data: listed, error } = await admin.auth.admin.mfa.listFactors({ userId: user.id });
    assert.equal(error, null);
    assert.deepEqual(listed.factors.map((f) => f.id), [enrolled.id]);
    const { error: deleteError } = await admin.auth.admin.mfa.deleteFactor({ userId: user.id, id: enrolled.id });
    assert.equal(deleteError, null);
    const { data: after } = await admin.auth.admin.mfa.listFactors({ userId: user.id });
    assert.deepEqual(after.factors, []);
  });
});
