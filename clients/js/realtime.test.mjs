// supabase-js v2 channels against a real Gatehouse: broadcast between two
// clients (self and ack honoured) and presence, over vsn 2.0.0 (the default,
// binary broadcasts) and 1.0.0. Row changes and private channels come later.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createClient } from '@supabase/supabase-js';
import ws from 'ws';
import { startGatehouse } from './gatehouse.mjs';

const shop = fileURLToPath(new URL('./shop.toml', import.meta.url));

/// Resolves with the first value `arm` passes to its callback, or fails after 5 s.
function next(arm) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('nothing arrived in 5 s')), 5000);
    arm((value) => { clearTimeout(timer); resolve(value); });
  });
}

function subscribed(channel) {
  return next((done) => channel.subscribe((status, error) => {
    if (status === 'SUBSCRIBED') done(status);
    else if (error) done(`${status}: ${error.message}`);
  }));
}

describe('realtime channels through supabase-js', () => {
  let server;
  const clients = [];
  const client = (vsn) => {
    const made = createClient(server.url, server.publishableKey, {
      auth: { persistSession: false, autoRefreshToken: false },
      realtime: { transport: ws, ...(vsn ? { vsn } : {}) },
    });
    clients.push(made);
    return made;
  };

  before(async () => {
    server = await startGatehouse(shop);
  });
  after(async () => {
    for (const made of clients) await made.removeAllChannels();
    await server?.stop();
  });

  for (const vsn of ['2.0.0', '1.0.0']) {
    test(`broadcast between two clients, vsn ${vsn}`, async () => {
      const ada = client(vsn);
      const bo = client(vsn);
      const room = `room-${vsn}`;
      const adaChannel = ada.channel(room, { config: { broadcast: { self: false, ack: true } } });
      const boChannel = bo.channel(room, { config: { broadcast: { self: true } } });
      const toBo = next((done) => boChannel.on('broadcast', { event: 'cursor' }, done));
      const ownEcho = [];
      adaChannel.on('broadcast', { event: 'cursor' }, (message) => ownEcho.push(message));
      assert.equal(await subscribed(adaChannel), 'SUBSCRIBED');
      assert.equal(await subscribed(boChannel), 'SUBSCRIBED');

      const acked = await adaChannel.send({ type: 'broadcast', event: 'cursor', payload: { x: 3, y: 4 } });
      assert.equal(acked, 'ok', 'ack: the server answered');
      const message = await toBo;
      assert.equal(message.event, 'cursor');
      assert.deepEqual(message.payload, { x: 3, y: 4 });

      // Bo asked for its own messages; Ada did not, and heard none of hers.
      const echoed = next((done) => boChannel.on('broadcast', { event: 'wave' }, done));
      await boChannel.send({ type: 'broadcast', event: 'wave', payload: { hello: true } });
      assert.deepEqual((await echoed).payload, { hello: true });
      assert.equal(ownEcho.length, 0);
    });
  }

  test('the server broadcasts with the secret key; the publishable key may not', async () => {
    const listener = client();
    const channel = listener.channel('news');
    const headline = next((done) => channel.on('broadcast', { event: 'headline' }, done));
    assert.equal(await subscribed(channel), 'SUBSCRIBED');
    const service = createClient(server.url, server.secretKey, {
      auth: { persistSession: false, autoRefreshToken: false },
      realtime: { transport: ws },
    });
    // Not joined: supabase-js sends through POST /realtime/v1/api/broadcast.
    const sent = await service.channel('news').send({ type: 'broadcast', event: 'headline', payload: { title: 'Open' } });
    assert.equal(sent, 'ok');
    assert.deepEqual((await headline).payload, { title: 'Open' });
    const refused = await client().channel('news').send({ type: 'broadcast', event: 'headline', payload: {} });
    assert.equal(refused, 'error');
  });

  test('presence: track, sync, and leave', async () => {
    const ada = client();
    const bo = client();
    const adaChannel = ada.channel('lobby', { config: { presence: { key: 'ada' } } });
    const boChannel = bo.channel('lobby', { config: { presence: { key: 'bo' } } });
    const adaJoined = next((done) => boChannel.on('presence', { event: 'join' }, ({ key, newPresences }) => {
      if (key === 'ada') done(newPresences);
    }));
    const adaLeft = next((done) => boChannel.on('presence', { event: 'leave' }, ({ key }) => {
      if (key === 'ada') done(key);
    }));
    adaChannel.on('presence', { event: 'sync' }, () => {});
    assert.equal(await subscribed(boChannel), 'SUBSCRIBED');
    assert.equal(await subscribed(adaChannel), 'SUBSCRIBED');
    assert.equal(await adaChannel.track({ status: 'online' }), 'ok');
    const [presence] = await adaJoined;
    assert.equal(presence.status, 'online');
    assert.deepEqual(Object.keys(boChannel.presenceState()), ['ada']);

    await ada.removeChannel(adaChannel);
    assert.equal(await adaLeft, 'ada');
    assert.deepEqual(boChannel.presenceState(), {});
  });

  test('a private channel is refused until realtime policies exist', async () => {
    const eve = client();
    const channel = eve.channel('vault', { config: { private: true } });
    const status = await subscribed(channel);
    assert.match(status, /Unauthorized/);
    await eve.removeChannel(channel);
  });

  test('a socket without an API key is refused', async () => {
    const url = `${server.url.replace('http', 'ws')}/realtime/v1/websocket?vsn=2.0.0`;
    const status = await new Promise((resolve) => {
      const socket = new ws(url);
      socket.on('unexpected-response', (_, response) => resolve(response.statusCode));
      socket.on('open', () => resolve('opened'));
    });
    assert.equal(status, 401);
  });
});
