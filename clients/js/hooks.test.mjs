// Inbound webhooks signed by Stripe's and Standard Webhooks' own npm packages.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import Stripe from 'stripe';
import { Webhook } from 'standardwebhooks';
import { clientsOf, startGatehouse } from './gatehouse.mjs';

const config = fileURLToPath(new URL('./hooks.toml', import.meta.url));
const STRIPE_SECRET = `whsec_${randomBytes(24).toString('hex')}`;
const BILLING_SECRET = `whsec_${randomBytes(32).toString('base64')}`;
const stripe = new Stripe('sk_test_not_used_for_any_call');

describe('inbound webhooks', () => {
  let server;
  let service;

  before(async () => {
    server = await startGatehouse(config, {
      GATEHOUSE_HOOK_SECRET_STRIPE: STRIPE_SECRET,
      GATEHOUSE_HOOK_SECRET_BILLING: BILLING_SECRET,
    });
    ({ service } = clientsOf(server));
  });
  after(async () => server?.stop());

  const deliver = (hook, body, headers) =>
    fetch(`${server.url}/hooks/v1/${hook}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body,
    });

  async function recorded(count) {
    for (let attempt = 0; attempt < 200; attempt++) {
      const { data } = await service.from('payments').select('event, kind').order('event');
      if (data.length >= count) return data;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error('the events were not recorded');
  }

  const stripeSigned = (payload, options = {}) => ({
    'stripe-signature': stripe.webhooks.generateTestHeaderString({ payload, secret: STRIPE_SECRET, ...options }),
  });

  const standardSigned = (id, payload, { secret = BILLING_SECRET, at = new Date() } = {}) => ({
    'webhook-id': id,
    'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
    'webhook-signature': new Webhook(secret).sign(id, at, payload),
  });

  test('signed events are accepted once, however often delivered', async () => {
    const paid = JSON.stringify({ id: 'evt_paid', type: 'checkout.session.completed' });
    for (let delivery = 0; delivery < 3; delivery++) {
      const response = await deliver('stripe', paid, stripeSigned(paid));
      assert.equal(response.status, 200);
    }
    const invoice = JSON.stringify({ id: 'inv_1', type: 'invoice.paid' });
    for (let delivery = 0; delivery < 2; delivery++) {
      const response = await deliver('billing', invoice, standardSigned('msg_inv_1', invoice));
      assert.equal(response.status, 200);
    }
    assert.deepEqual(await recorded(2), [
      { event: 'evt_paid', kind: 'checkout.session.completed' },
      { event: 'inv_1', kind: 'invoice.paid' },
    ]);
  });

  test('a wrong secret, a stale time, a changed body and no signature are refused', async () => {
    const body = JSON.stringify({ id: 'evt_forged', type: 'checkout.session.completed' });
    const changed = JSON.stringify({ id: 'evt_forged', type: 'checkout.session.expired' });
    const refusals = [
      deliver('stripe', body, stripeSigned(body, { secret: 'whsec_someone_elses_secret_value' })),
      deliver('stripe', body, stripeSigned(body, { timestamp: Math.floor(Date.now() / 1000) - 600 })),
      deliver('stripe', changed, stripeSigned(body)),
      deliver('stripe', body, {}),
      deliver('billing', body, standardSigned('msg_forged', body, { secret: `whsec_${randomBytes(32).toString('base64')}` })),
      deliver('billing', body, standardSigned('msg_forged', body, { at: new Date(Date.now() - 600_000) })),
      deliver('billing', changed, standardSigned('msg_forged', body)),
    ];
    for (const response of await Promise.all(refusals)) {
      assert.equal(response.status, 400);
      const refusal = await response.json();
      assert.equal(refusal.code, 'invalid_signature');
      assert.doesNotMatch(JSON.stringify(refusal), /stale|secret|time/i, 'no reason is given');
    }
    await new Promise((resolve) => setTimeout(resolve, 300));
    const { data } = await service.from('payments').select('event').eq('event', 'evt_forged');
    assert.deepEqual(data, []);
  });
});
