// Sign-in through other providers with supabase-js: a real OpenID Certified
// provider (oidc-provider from npm) started on 127.0.0.1, its login driven over
// HTTP as a browser would, in both of supabase-js's flows; GitHub's preset
// against a stand-in serving GitHub's documented shapes; and every attack on
// the flows refused.
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, sign } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createClient } from '@supabase/supabase-js';
import Provider from 'oidc-provider';
import ws from 'ws';
import { startGatehouse } from './gatehouse.mjs';

const APP = 'http://127.0.0.1:3000';
const PASSWORD = 'correct horse battery staple';
const CLIENT_SECRET = 'oidc-client-secret-for-the-suite';

/// People at the provider: their email, and whether the provider verified it.
const accounts = {
  ada: { email: 'ada@example.com', email_verified: true, name: 'Ada' },
  eve: { email: 'victim@example.com', email_verified: false, name: 'Eve' },
  vic: { email: 'victim@example.com', email_verified: true, name: 'Victor' },
  lin: { email: 'lin@example.com', email_verified: true, name: 'Lin' },
  kim: { email: 'kim@elsewhere.example', email_verified: true, name: 'Kim' },
};

function listen(handler) {
  const server = createServer(handler);
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
const sha256hex = (text) => createHash('sha256').update(text).digest('hex');

/// A JWT signed RS256 with `key` (a node KeyObject).
function jwt(claims, key, kid) {
  const head = b64({ alg: 'RS256', typ: 'JWT', kid });
  const body = b64(claims);
  const signature = sign('sha256', Buffer.from(`${head}.${body}`), key).toString('base64url');
  return `${head}.${body}.${signature}`;
}

/// A browser: follows redirects by hand, keeping cookies per host, and signs
/// in at oidc-provider's development login as `login`, consenting.
class Browser {
  constructor() {
    this.jars = new Map();
  }

  cookieHeader(url) {
    const jar = this.jars.get(new URL(url).host) ?? new Map();
    return [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  keep(url, response) {
    const host = new URL(url).host;
    const jar = this.jars.get(host) ?? new Map();
    for (const line of response.headers.getSetCookie()) {
      const [pair, ...attributes] = line.split(';');
      const [name, value] = [pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1)];
      const expired = attributes.some((a) => /max-age=0\b/i.test(a.trim()) || /expires=Thu, 01 Jan 1970/i.test(a));
      if (expired || value === '') jar.delete(name.trim());
      else jar.set(name.trim(), value);
    }
    this.jars.set(host, jar);
  }

  async request(url, options = {}) {
    const response = await fetch(url, {
      ...options,
      redirect: 'manual',
      headers: { ...(options.headers ?? {}), cookie: this.cookieHeader(url) },
    });
    this.keep(url, response);
    return response;
  }

  /// Follows redirects from `url` until one leads to the app (returned) or a
  /// page asks to sign in or consent (answered as `login`).
  async visit(url, login) {
    let next = url;
    for (let hop = 0; hop < 20; hop++) {
      if (next.startsWith(APP)) return next;
      const response = await this.request(next);
      if (response.status >= 300 && response.status < 400) {
        next = new URL(response.headers.get('location'), next).href;
        continue;
      }
      const page = await response.text();
      if (response.status !== 200) throw new Error(`${next} answered ${response.status}: ${page.slice(0, 300)}`);
      const prompt = page.match(/name="prompt" value="(\w+)"/)?.[1];
      if (!prompt) throw new Error(`no prompt on ${next}: ${page.slice(0, 300)}`);
      const form = new URLSearchParams({ prompt, login, password: 'anything' });
      const posted = await this.request(next, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: form.toString(),
      });
      next = new URL(posted.headers.get('location'), next).href;
    }
    throw new Error('too many redirects');
  }
}

const fragment = (url) => Object.fromEntries(new URLSearchParams(new URL(url).hash.slice(1)));

describe('sign-in through providers with supabase-js', () => {
  let server;
  let oidcServer;
  let githubServer;
  let issuer;
  let providerKey;
  const kid = 'suite-key';

  const client = (flowType = 'implicit') =>
    createClient(server.url, server.publishableKey, {
      auth: { flowType, persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
      realtime: { transport: ws },
    });

  /// The browser's URL for a sign-in supabase-js began (as it would navigate).
  const browserUrl = (url) => {
    const parsed = new URL(url);
    parsed.searchParams.delete('skip_http_redirect');
    return parsed.href;
  };

  async function signIn(login, { flowType = 'implicit', provider = 'corp' } = {}) {
    const supabase = client(flowType);
    const { data, error } = await supabase.auth.signInWithOAuth({
      provider,
      options: { redirectTo: `${APP}/welcome`, skipBrowserRedirect: true },
    });
    assert.equal(error, null);
    const browser = new Browser();
    const landed = await browser.visit(browserUrl(data.url), login);
    return { supabase, browser, landed };
  }

  async function sessionOf({ supabase, landed }) {
    const hash = fragment(landed);
    if (hash.error_code) return { error: hash };
    if (hash.access_token) {
      const { data, error } = await supabase.auth.setSession({ access_token: hash.access_token, refresh_token: hash.refresh_token });
      assert.equal(error, null);
      return { session: data.session, user: data.user };
    }
    const code = new URL(landed).searchParams.get('code');
    const { data, error } = await supabase.auth.exchangeCodeForSession(code);
    return error ? { error } : { session: data.session, user: data.user };
  }

  const signingJwk = (key, keyId) => ({ ...key.export({ format: 'jwk' }), kid: keyId, alg: 'RS256', use: 'sig' });

  /// (Re)starts the provider behind the same address, publishing `keys`.
  function publish(keys) {
    const provider = new Provider(issuer, {
      clients: [{
        client_id: 'gatehouse',
        client_secret: CLIENT_SECRET,
        redirect_uris: [`${server.url}/auth/v1/callback`],
        grant_types: ['authorization_code'],
        response_types: ['code'],
      }],
      jwks: { keys },
      claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
      conformIdTokenClaims: false,
      pkce: { required: () => true },
      async findAccount(_, id) {
        const account = accounts[id];
        if (!account) return undefined;
        return { accountId: id, claims: () => ({ sub: id, ...account }) };
      },
    });
    oidcServer.handler = provider.callback();
  }

  before(async () => {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    providerKey = privateKey;
    oidcServer = await listen((req, res) => oidcServer.handler(req, res));
    issuer = `http://127.0.0.1:${oidcServer.address().port}`;

    // GitHub's documented shapes: the authorize redirect, the token (as JSON),
    // /user and /user/emails; the PKCE verifier is checked as GitHub does.
    const githubCodes = new Map();
    githubServer = await listen(async (req, res) => {
      const url = new URL(req.url, 'http://github.test');
      const json = (status, body) => { res.writeHead(status, { 'content-type': 'application/json' }); res.end(JSON.stringify(body)); };
      if (url.pathname === '/login/oauth/authorize') {
        const code = `gh-${Math.random().toString(36).slice(2)}`;
        githubCodes.set(code, url.searchParams.get('code_challenge'));
        const back = new URL(url.searchParams.get('redirect_uri'));
        back.searchParams.set('code', code);
        back.searchParams.set('state', url.searchParams.get('state'));
        res.writeHead(302, { location: back.href });
        return res.end();
      }
      if (url.pathname === '/login/oauth/access_token') {
        let body = '';
        for await (const chunk of req) body += chunk;
        const form = new URLSearchParams(body);
        const challenge = githubCodes.get(form.get('code'));
        githubCodes.delete(form.get('code'));
        const derived = createHash('sha256').update(form.get('code_verifier') ?? '').digest('base64url');
        if (form.get('client_secret') !== 'github-secret' || !challenge || challenge !== derived) {
          return json(200, { error: 'bad_verification_code' });
        }
        return json(200, { access_token: 'gho_suite', token_type: 'bearer', scope: 'read:user,user:email' });
      }
      if (req.headers.authorization !== 'Bearer gho_suite') return json(401, { message: 'Bad credentials' });
      if (url.pathname === '/api/user') {
        return json(200, { id: 4242, login: 'octocat', name: 'The Octocat', email: null, avatar_url: 'https://avatars.example/4242' });
      }
      if (url.pathname === '/api/user/emails') {
        return json(200, [
          { email: 'octo-old@example.com', primary: false, verified: false, visibility: null },
          { email: 'octocat@example.com', primary: true, verified: true, visibility: 'private' },
        ]);
      }
      return json(404, { message: 'Not Found' });
    });
    const github = `http://127.0.0.1:${githubServer.address().port}`;

    const dir = mkdtempSync(join(tmpdir(), 'gatehouse-oauth-'));
    const config = join(dir, 'gatehouse.toml');
    writeFileSync(config, `
[auth]
email_confirmation = false
site_url = "${APP}"
redirect_urls = ["${APP}/welcome"]

[rate_limits]
auth = { limit = 1000, window_secs = 60 }

[auth.providers.corp]
issuer = "${issuer}"
client_id = "gatehouse"
allow_private_addresses = true

[auth.providers.github]
client_id = "gh-client"
authorize_url = "${github}/login/oauth/authorize"
token_url = "${github}/login/oauth/access_token"
api_url = "${github}/api"
allow_private_addresses = true
provider_tokens = true
`);
    server = await startGatehouse(config, {
      GATEHOUSE_OAUTH_SECRET_CORP: CLIENT_SECRET,
      GATEHOUSE_OAUTH_SECRET_GITHUB: 'github-secret',
    });

    publish([signingJwk(providerKey, kid)]);
  });

  after(async () => {
    await server?.stop();
    oidcServer?.close();
    githubServer?.close();
  });

  test('the settings list the providers', async () => {
    const response = await fetch(`${server.url}/auth/v1/settings`, { headers: { apikey: server.publishableKey } });
    const settings = await response.json();
    assert.equal(settings.external.corp, true);
    assert.equal(settings.external.github, true);
  });

  test('implicit flow: the session arrives in the fragment, with the identity', async () => {
    const flow = await signIn('ada');
    assert.ok(flow.landed.startsWith(`${APP}/welcome#`), flow.landed);
    assert.equal(fragment(flow.landed).provider_token, undefined, 'not configured: not handed on');
    const { user, session } = await sessionOf(flow);
    assert.equal(user.email, 'ada@example.com');
    assert.ok(user.email_confirmed_at, 'a verified provider email is confirmed');
    assert.equal(user.app_metadata.provider, 'corp');
    const { data: { identities } } = await flow.supabase.auth.getUserIdentities();
    assert.deepEqual(identities.map((i) => [i.provider, i.id]), [['corp', 'ada']]);
    assert.equal(identities[0].identity_data.email, 'ada@example.com');
    const claims = JSON.parse(Buffer.from(session.access_token.split('.')[1], 'base64url'));
    assert.equal(claims.amr[0].method, 'oauth');

    // The same person again: the same account.
    const again = await sessionOf(await signIn('ada'));
    assert.equal(again.user.id, user.id);
  });

  test('PKCE flow: a code in the query, exchanged once with the verifier', async () => {
    const flow = await signIn('lin', { flowType: 'pkce' });
    const landed = new URL(flow.landed);
    assert.equal(landed.pathname, '/welcome');
    const code = landed.searchParams.get('code');
    assert.ok(code && !landed.hash.includes('access_token'));
    const { data, error } = await flow.supabase.auth.exchangeCodeForSession(code);
    assert.equal(error, null);
    assert.equal(data.user.email, 'lin@example.com');

    // The code works once.
    const replay = await fetch(`${server.url}/auth/v1/token?grant_type=pkce`, {
      method: 'POST',
      headers: { apikey: server.publishableKey, 'content-type': 'application/json' },
      body: JSON.stringify({ auth_code: code, code_verifier: 'x'.repeat(43) }),
    });
    assert.equal((await replay.json()).error_code, 'flow_state_not_found');
  });

  test('a wrong PKCE verifier is refused', async () => {
    const flow = await signIn('lin', { flowType: 'pkce' });
    const code = new URL(flow.landed).searchParams.get('code');
    const response = await fetch(`${server.url}/auth/v1/token?grant_type=pkce`, {
      method: 'POST',
      headers: { apikey: server.publishableKey, 'content-type': 'application/json' },
      body: JSON.stringify({ auth_code: code, code_verifier: 'a'.repeat(64) }),
    });
    assert.equal(response.status, 400);
    assert.equal((await response.json()).error_code, 'bad_code_verifier');
  });

  /// Drives a sign-in up to the provider's redirect back to Gatehouse, and
  /// stops there: the browser, and the callback URL it was sent to.
  async function toCallback(login, browser = new Browser()) {
    const supabase = client();
    const { data } = await supabase.auth.signInWithOAuth({ provider: 'corp', options: { redirectTo: `${APP}/welcome`, skipBrowserRedirect: true } });
    let next = browserUrl(data.url);
    for (let hop = 0; hop < 20; hop++) {
      if (next.startsWith(`${server.url}/auth/v1/callback`)) return { browser, callback: next };
      const response = await browser.request(next);
      if (response.status >= 300 && response.status < 400) {
        next = new URL(response.headers.get('location'), next).href;
        continue;
      }
      const page = await response.text();
      const prompt = page.match(/name="prompt" value="(\w+)"/)[1];
      const posted = await browser.request(next, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ prompt, login, password: 'x' }).toString(),
      });
      next = new URL(posted.headers.get('location'), next).href;
    }
    throw new Error('never reached the callback');
  }

  test('a replayed, forged or foreign-browser state is refused', async () => {
    // The browser that began the flow finishes it; the same callback again is refused.
    const own = await toCallback('ada');
    const first = await own.browser.request(own.callback);
    assert.ok(fragment(first.headers.get('location')).access_token);
    const replayed = await own.browser.request(own.callback);
    assert.equal(fragment(replayed.headers.get('location')).error_code, 'bad_oauth_state');

    // Another browser (without the flow's cookie) cannot finish a flow: login CSRF.
    const stolen = await toCallback('ada');
    const foreign = await new Browser().request(stolen.callback);
    assert.equal(fragment(foreign.headers.get('location')).error_code, 'bad_oauth_state');

    // A state Gatehouse never issued.
    const forged = new URL(own.callback);
    forged.searchParams.set('state', 'forged-state');
    const wrong = await own.browser.request(forged.href);
    const location = wrong.headers.get('location');
    assert.ok(location.startsWith(APP), location);
    assert.equal(fragment(location).error_code, 'bad_oauth_state');
  });

  test('flows begun in two tabs of one browser both finish', async () => {
    const browser = new Browser();
    const first = await toCallback('ada', browser);
    const second = await toCallback('ada', browser);
    for (const { callback } of [first, second]) {
      const landed = await browser.request(callback);
      assert.ok(fragment(landed.headers.get('location')).access_token, landed.headers.get('location'));
    }
  });

  test('a foreign redirect_to is refused before the provider is involved', async () => {
    for (const target of ['https://evil.example/welcome', `${APP}.evil.example/welcome`, `http://user@127.0.0.1:3000/welcome`]) {
      const response = await fetch(`${server.url}/auth/v1/authorize?provider=corp&redirect_to=${encodeURIComponent(target)}`, { redirect: 'manual' });
      assert.equal(response.status, 400, target);
      assert.equal((await response.json()).error_code, 'validation_failed');
    }
  });

  test('an unverified provider email matching an account makes a separate account', async () => {
    const victim = client();
    const { data: signedUp } = await victim.auth.signUp({ email: 'victim@example.com', password: PASSWORD });
    const attacker = await sessionOf(await signIn('eve'));
    assert.notEqual(attacker.user.id, signedUp.user.id, 'not signed into the victim’s account');
    assert.equal(attacker.user.email ?? '', '', 'an unverified address is not the account’s');
    const { data: still } = await victim.auth.signInWithPassword({ email: 'victim@example.com', password: PASSWORD });
    assert.deepEqual(still.user.identities.map((i) => i.provider), ['email'], 'nothing linked to the victim');

    // A verified address at the provider is the same person: linked.
    const owner = await sessionOf(await signIn('vic'));
    assert.equal(owner.user.id, signedUp.user.id);
    assert.deepEqual(owner.user.identities.map((i) => i.provider).sort(), ['corp', 'email']);
  });

  test('signInWithIdToken checks signature, audience, expiry and nonce', async () => {
    const now = Math.floor(Date.now() / 1000);
    const nonce = 'raw-nonce-the-app-keeps';
    const claims = {
      iss: issuer, sub: 'native-1', aud: 'gatehouse', iat: now, exp: now + 300,
      nonce: sha256hex(nonce), email: 'native@example.com', email_verified: true,
    };
    const supabase = client();
    const attempt = (token, withNonce = nonce) =>
      supabase.auth.signInWithIdToken({ provider: 'corp', token, nonce: withNonce });

    const { data, error } = await attempt(jwt(claims, providerKey, kid));
    assert.equal(error, null);
    assert.equal(data.user.email, 'native@example.com');

    const { privateKey: otherKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const refusals = {
      'another key': [jwt(claims, otherKey, kid)],
      'another audience': [jwt({ ...claims, aud: 'someone-else' }, providerKey, kid)],
      expired: [jwt({ ...claims, iat: now - 7200, exp: now - 3600 }, providerKey, kid)],
      'a wrong nonce': [jwt(claims, providerKey, kid), 'another-nonce'],
      'another issuer': [jwt({ ...claims, iss: 'https://elsewhere.example' }, providerKey, kid)],
    };
    for (const [why, [token, withNonce]] of Object.entries(refusals)) {
      const { error: refused } = await attempt(token, withNonce);
      assert.ok(refused, `refused: ${why}`);
      assert.equal(refused.status, 400, why);
    }
  });

  test('after the provider rotates its keys, tokens from the new key verify', async () => {
    const { privateKey: rotated } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    publish([signingJwk(rotated, 'rotated'), signingJwk(providerKey, kid)]);
    // Gatehouse sends for the keys again when a token names one it lacks, at
    // most every five seconds.
    await new Promise((resolve) => setTimeout(resolve, 5500));
    const now = Math.floor(Date.now() / 1000);
    const claims = { iss: issuer, sub: 'rotated-1', aud: 'gatehouse', iat: now, exp: now + 300, email: 'rot@example.com', email_verified: true };
    const { data, error } = await client().auth.signInWithIdToken({ provider: 'corp', token: jwt(claims, rotated, 'rotated') });
    assert.equal(error, null);
    assert.equal(data.user.email, 'rot@example.com');
  });

  test('GitHub: the preset signs in with its verified primary email', async () => {
    const flow = await signIn('unused', { provider: 'github', flowType: 'pkce' });
    const { user, session, error } = await sessionOf(flow);
    assert.equal(error, undefined);
    assert.equal(session.provider_token, 'gho_suite', 'configured: handed on with the session');
    assert.equal(user.email, 'octocat@example.com');
    const github = user.identities.find((i) => i.provider === 'github');
    assert.equal(github.id, '4242');
    assert.equal(github.identity_data.user_name, 'octocat');
  });

  test('linkIdentity and unlinkIdentity, keeping one way in', async () => {
    const pat = client();
    await pat.auth.signUp({ email: 'pat-link@example.com', password: PASSWORD });
    const { data, error } = await pat.auth.linkIdentity({ provider: 'corp', options: { redirectTo: `${APP}/welcome` } });
    assert.equal(error, null);
    const browser = new Browser();
    const landed = await browser.visit(data.url, 'ada');
    assert.equal(fragment(landed).error_code, 'identity_already_exists', 'ada is another account’s');

    const { data: again } = await pat.auth.linkIdentity({ provider: 'corp', options: { redirectTo: `${APP}/welcome` } });
    const linked = await new Browser().visit(again.url, 'kim');
    assert.ok(fragment(linked).access_token, linked);
    let { data: { identities } } = await pat.auth.getUserIdentities();
    assert.deepEqual(identities.map((i) => [i.provider, i.id]), [['email', identities[0].id], ['corp', 'kim']]);
    const { error: unlinkError } = await pat.auth.unlinkIdentity(identities.find((i) => i.provider === 'corp'));
    assert.equal(unlinkError, null);
    ({ data: { identities } } = await pat.auth.getUserIdentities());
    assert.deepEqual(identities.map((i) => i.provider), ['email']);

    // An account with only its provider identity cannot unlink it.
    const lin = await sessionOf(await signIn('lin'));
    const only = lin.user.identities.find((i) => i.provider === 'corp');
    const linClient = client();
    await linClient.auth.setSession({ access_token: lin.session.access_token, refresh_token: lin.session.refresh_token });
    const { error: single } = await linClient.auth.unlinkIdentity(only);
    assert.equal(single?.code, 'single_identity_not_deletable');
  });
});
