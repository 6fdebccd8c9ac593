// supabase-js v2 channels against a real Gatehouse: broadcast between two
// clients (self and ack honoured) and presence, over vsn 2.0.0 (the default,
// binary broadcasts) and 1.0.0; row changes under each subscriber's select
// policy and column grants, with token expiry and refresh.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createClient } from '@supabase/supabase-js';
import ws from 'ws';
import { randomUUID } from 'node:crypto';
import { clientsOf, startGatehouse } from './gatehouse.mjs';

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

  test('private channels follow the realtime policies', async () => {
    const signedIn = async () => {
      const user = client();
      await user.realtime.setAuth(server.tokenFor(randomUUID()));
      return user;
    };
    const eve = client();
    const refused = eve.channel('lobby', { config: { private: true } });
    assert.match(await subscribed(refused), /Unauthorized/, 'anon has no policy');

    const ada = await signedIn();
    const bo = await signedIn();
    assert.match(await subscribed(ada.channel('vault', { config: { private: true } })), /Unauthorized/);
    const adaLobby = ada.channel('lobby', { config: { private: true, broadcast: { ack: true } } });
    const boLobby = bo.channel('lobby', { config: { private: true } });
    const publicLobby = client().channel('lobby');
    const overheard = [];
    publicLobby.on('broadcast', { event: 'hello' }, (message) => overheard.push(message));
    const toBo = next((done) => boLobby.on('broadcast', { event: 'hello' }, done));
    for (const channel of [adaLobby, boLobby, publicLobby]) assert.equal(await subscribed(channel), 'SUBSCRIBED');
    assert.equal(await adaLobby.send({ type: 'broadcast', event: 'hello', payload: { from: 'ada' } }), 'ok');
    assert.deepEqual((await toBo).payload, { from: 'ada' });
    // The policies allow no presence: tracking is refused.
    assert.notEqual(await adaLobby.track({ here: true }), 'ok');
    // The server reaches the private channel with the secret key.
    const service = createClient(server.url, server.secretKey, {
      auth: { persistSession: false, autoRefreshToken: false },
      realtime: { transport: ws },
    });
    const fromServer = next((done) => boLobby.on('broadcast', { event: 'notice' }, done));
    const sent = await service.channel('lobby', { config: { private: true } })
      .send({ type: 'broadcast', event: 'notice', payload: { n: 1 } });
    assert.equal(sent, 'ok');
    assert.deepEqual((await fromServer).payload, { n: 1 });
    await pause(200);
    assert.equal(overheard.length, 0, 'the public channel of the same name heard nothing');
  });

  test('a client reconnects and rejoins after the server restarts', async () => {
    const listener = client();
    const channel = listener.channel('restart-room');
    const heard = [];
    channel.on('broadcast', { event: 'ping' }, (message) => heard.push(message.payload));
    const statuses = [];
    channel.subscribe((status) => statuses.push(status));
    await until(statuses, 1);
    assert.equal(statuses[0], 'SUBSCRIBED');
    await server.restart();
    // realtime-js notices the closed socket, reconnects with backoff and rejoins.
    const deadline = Date.now() + 20_000;
    while (channel.state !== 'joined' || !listener.realtime.isConnected() || statuses.length < 2) {
      if (Date.now() > deadline) throw new Error(`not rejoined: ${statuses.join(', ')}`);
      await pause(100);
    }
    const speaker = client().channel('restart-room');
    assert.equal(await subscribed(speaker), 'SUBSCRIBED');
    await speaker.send({ type: 'broadcast', event: 'ping', payload: { after: 'restart' } });
    await until(heard, 1);
    assert.deepEqual(heard, [{ after: 'restart' }]);
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

/// Every payload `channel` receives for `table`, as it arrives.
function collect(channel, table, filter) {
  const received = [];
  channel.on('postgres_changes', { event: '*', schema: 'public', table, ...(filter ? { filter } : {}) },
    (payload) => received.push(payload));
  return received;
}

/// Waits until `received` holds `count` payloads (5 s at most).
async function until(received, count) {
  const deadline = Date.now() + 5000;
  while (received.length < count) {
    if (Date.now() > deadline) throw new Error(`${received.length} of ${count} changes arrived`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

describe('row changes through supabase-js', () => {
  let server;
  let clients;
  const made = [];
  const signedIn = (user, lifetime) => {
    const client = createClient(server.url, server.publishableKey, {
      auth: { persistSession: false, autoRefreshToken: false },
      accessToken: async () => server.tokenFor(user, lifetime),
      realtime: { transport: ws },
    });
    made.push(client);
    return client;
  };

  before(async () => {
    server = await startGatehouse(shop);
    clients = clientsOf(server);
    made.push(clients.service, clients.anon);
  });
  after(async () => {
    for (const client of made) await client.removeAllChannels();
    await server?.stop();
  });

  test("subscribers receive their own orders' changes and never another user's", async () => {
    const adaId = randomUUID();
    const boId = randomUUID();
    const ada = signedIn(adaId);
    const bo = signedIn(boId);
    const adaChannel = ada.channel('ada-orders');
    const adaSees = collect(adaChannel, 'orders');
    const boChannel = bo.channel('bo-orders');
    const boSees = collect(boChannel, 'orders');
    // A filter naming Ada's id does not widen what Bo may see.
    const boSpies = collect(boChannel, 'orders', `user_id=eq.${adaId}`);
    assert.equal(await subscribed(adaChannel), 'SUBSCRIBED');
    assert.equal(await subscribed(boChannel), 'SUBSCRIBED');

    const { data: order, error } = await ada.from('orders').insert({ total_cents: 1200, note: 'gift' }).select().single();
    assert.equal(error, null);
    await ada.from('orders').update({ note: 'wrapped' }).eq('id', order.id);
    await clients.service.from('orders').delete().eq('id', order.id);
    await until(adaSees, 3);
    const [inserted, updated, deleted] = adaSees;
    assert.equal(inserted.eventType, 'INSERT');
    assert.equal(inserted.schema, 'public');
    assert.equal(inserted.table, 'orders');
    assert.deepEqual(inserted.new, order, 'the row as the data API shows it');
    assert.ok(!Number.isNaN(Date.parse(inserted.commit_timestamp)));
    assert.equal(updated.eventType, 'UPDATE');
    assert.equal(updated.new.note, 'wrapped');
    assert.deepEqual(updated.old, { id: order.id }, 'the old row carries its key alone');
    assert.equal(deleted.eventType, 'DELETE');
    assert.deepEqual(deleted.old, { id: order.id });

    // Bo's own order is the first change he hears of: Ada's three never came.
    const { data: his } = await bo.from('orders').insert({ total_cents: 5 }).select().single();
    await until(boSees, 1);
    await pause(200);
    assert.deepEqual(boSees.map((change) => change.new.id), [his.id]);
    assert.equal(boSpies.length, 0);
    assert.equal(adaSees.length, 3, 'nor does Ada hear of his');
  });

  test('a membership policy (exists) is decided per subscriber and per row', async () => {
    const { data: product } = await clients.service.from('products')
      .insert({ name: 'Kettle', price_cents: 2999 }).select().single();
    const ada = signedIn(randomUUID());
    const bo = signedIn(randomUUID());
    const channel = ada.channel('ada-lines');
    const lines = collect(channel, 'order_items');
    assert.equal(await subscribed(channel), 'SUBSCRIBED');
    const { data: hisOrder } = await bo.from('orders').insert({}).select().single();
    const { error: hisError } = await bo.from('order_items').insert({ order_id: hisOrder.id, product_id: product.id, quantity: 1 });
    assert.equal(hisError, null);
    const { data: herOrder } = await ada.from('orders').insert({}).select().single();
    await ada.from('order_items').insert({ order_id: herOrder.id, product_id: product.id, quantity: 2 });
    await until(lines, 1);
    await pause(200);
    assert.deepEqual(lines.map((change) => change.new.order_id), [herOrder.id]);
  });

  test("one table's changes arrive in the order they committed", async () => {
    const ada = signedIn(randomUUID());
    const channel = ada.channel('ada-racing');
    const seen = collect(channel, 'orders');
    assert.equal(await subscribed(channel), 'SUBSCRIBED');
    const { data: order } = await ada.from('orders').insert({ total_cents: 1 }).select().single();
    // Racing writes of one row: whichever committed last is what the table holds.
    await Promise.all(Array.from({ length: 20 }, (_, n) =>
      ada.from('orders').update({ note: `take ${n}` }).eq('id', order.id)));
    const { data: final } = await ada.from('orders').select('note').eq('id', order.id).single();
    await until(seen, 21);
    assert.equal(seen.at(-1).new.note, final.note, 'the last change heard is the last committed');
  });

  test('a write of many rows is one note, and every row arrives', async () => {
    const ada = signedIn(randomUUID());
    const channel = ada.channel('ada-bulk');
    const seen = collect(channel, 'orders');
    assert.equal(await subscribed(channel), 'SUBSCRIBED');
    const rows = Array.from({ length: 300 }, (_, n) => ({ total_cents: n }));
    const { error } = await ada.from('orders').insert(rows);
    assert.equal(error, null);
    await until(seen, 300);
    assert.deepEqual(seen.map((change) => change.new.total_cents), rows.map((row) => row.total_cents));
  });

  test('filters choose among the rows a subscriber may see', async () => {
    const adaId = randomUUID();
    const ada = signedIn(adaId);
    const channel = ada.channel('big-orders');
    const big = collect(channel, 'orders', 'total_cents=gte.1000');
    const some = collect(channel, 'orders', 'total_cents=in.(1,2,3)');
    assert.equal(await subscribed(channel), 'SUBSCRIBED');
    await ada.from('orders').insert([{ total_cents: 999 }, { total_cents: 1000 }, { total_cents: 2 }]);
    await until(big, 1);
    await until(some, 1);
    await pause(200);
    assert.deepEqual(big.map((change) => change.new.total_cents), [1000]);
    assert.deepEqual(some.map((change) => change.new.total_cents), [2]);
  });

  test('a table the caller may not select cannot be subscribed to', async () => {
    const user = signedIn(randomUUID());
    // The token is at hand before the join (as after a sign-in): the join carries it.
    await user.realtime.setAuth(server.tokenFor(randomUUID()));
    const channel = user.channel('teams');
    collect(channel, 'teams');
    const status = await subscribed(channel);
    assert.match(status, /CHANNEL_ERROR: Unable to subscribe to changes/);
    assert.match(status, /permission denied for table teams/);
  });

  test('column grants trim what a subscriber receives; writes through triggers publish', async () => {
    const channel = clients.anon.channel('public-profiles');
    const seen = collect(channel, 'profiles');
    assert.equal(await subscribed(channel), 'SUBSCRIBED');
    const ada = signedIn(randomUUID());
    const { error } = await ada.from('profiles').insert({ display_name: '  Ada  ', bio: 'private bio' });
    assert.equal(error, null);
    await until(seen, 1);
    assert.deepEqual(Object.keys(seen[0].new).sort(), ['display_name', 'id']);
    assert.equal(seen[0].new.display_name, 'Ada', 'as the before trigger left it');
  });

  test("a signed-out user's channels are closed", async () => {
    const email = `rt-${randomUUID()}@example.com`;
    const password = 'correct horse battery staple 42';
    const tab = (name) => {
      const client = createClient(server.url, server.publishableKey, {
        auth: { persistSession: false, autoRefreshToken: false, storageKey: name },
        realtime: { transport: ws },
      });
      made.push(client);
      return client;
    };
    const first = tab('first');
    const { error } = await first.auth.signUp({ email, password });
    assert.equal(error, null);
    const second = tab('second');
    assert.equal((await second.auth.signInWithPassword({ email, password })).error, null);
    const channel = first.channel('my-orders-live');
    collect(channel, 'orders');
    const statuses = [];
    const closed = next((done) => channel.subscribe((status) => {
      statuses.push(status);
      if (status === 'CLOSED') done(status);
    }));
    await until(statuses, 1);
    assert.equal(statuses[0], 'SUBSCRIBED');
    // Signing out everywhere from the other tab ends the first tab's session too.
    assert.equal((await second.auth.signOut({ scope: 'global' })).error, null);
    assert.equal(await closed, 'CLOSED');
  });

  test('an expired token stops delivery; a refreshed one resumes it', async () => {
    const adaId = randomUUID();
    const writer = signedIn(adaId);
    const watcher = signedIn(adaId, 3);
    const channel = watcher.channel('expiring');
    const seen = collect(channel, 'orders');
    assert.equal(await subscribed(channel), 'SUBSCRIBED');
    await writer.from('orders').insert({ total_cents: 1 });
    await until(seen, 1);
    await pause(3500);
    await writer.from('orders').insert({ total_cents: 2 });
    await pause(500);
    assert.equal(seen.length, 1, 'nothing after the token expired');
    await watcher.realtime.setAuth(server.tokenFor(adaId));
    await pause(200);
    await writer.from('orders').insert({ total_cents: 3 });
    await until(seen, 2);
    assert.deepEqual(seen.map((change) => change.new.total_cents), [1, 3]);
  });
});

/// A raw realtime socket (vsn 1.0.0 JSON) and what it receives.
function rawSocket(server) {
  const url = `${server.url.replace('http', 'ws')}/realtime/v1/websocket?apikey=${server.publishableKey}&vsn=1.0.0`;
  const socket = new ws(url);
  // A refused upgrade surfaces as an error too: the test reads the status instead.
  socket.on('error', () => {});
  const received = [];
  socket.on('message', (data) => received.push(JSON.parse(data.toString())));
  const opened = new Promise((resolve) => {
    socket.on('open', () => resolve(200));
    socket.on('unexpected-response', (_, response) => resolve(response.statusCode));
  });
  const push = (topic, event, payload, ref) =>
    socket.send(JSON.stringify({ topic, event, payload, ref, join_ref: ref }));
  return { socket, received, opened, push };
}

describe('realtime bounds', () => {
  let server;
  const sockets = [];
  const open = () => {
    const made = rawSocket(server);
    sockets.push(made.socket);
    return made;
  };

  before(async () => {
    server = await startGatehouse(fileURLToPath(new URL('./realtime-bounds.toml', import.meta.url)));
  });
  after(async () => {
    for (const socket of sockets) socket.terminate();
    await server?.stop();
  });

  test('connections per address, channels per connection, message size and rate', async () => {
    const first = open();
    const second = open();
    assert.equal(await first.opened, 200);
    assert.equal(await second.opened, 200);
    const third = open();
    assert.equal(await third.opened, 429, 'a third socket from one address');

    for (const name of ['a', 'b', 'c']) first.push(`realtime:${name}`, 'phx_join', { config: {} }, name);
    await until(first.received, 3);
    const refused = first.received.find((message) => message.topic === 'realtime:c');
    assert.equal(refused.payload.status, 'error');
    assert.match(refused.payload.response.reason, /^ChannelRateLimitReached/);

    first.received.length = 0;
    for (let at = 0; at < 10; at += 1) {
      first.push('realtime:a', 'broadcast', { type: 'broadcast', event: 'tick', payload: {} }, `t${at}`);
    }
    await until(first.received, 1);
    await pause(300);
    const limited = first.received.filter((message) => /MessagePerSecondRateLimitReached/.test(message.payload?.response?.reason ?? ''));
    assert.ok(limited.length >= 5, `${limited.length} of 10 were refused`);

    const closedWith = new Promise((resolve) => second.socket.on('close', (code) => resolve(code)));
    second.push('realtime:a', 'phx_join', { config: {}, padding: 'x'.repeat(4096) }, '1');
    assert.equal(await closedWith, 1009, 'a frame over the size limit closes the socket');
  });
});

// Instances share one PostgreSQL database; they hear each other through it
// (LISTEN/NOTIFY) or, with GATEHOUSE_REDIS_URL, through Redis pub/sub.
const sharedDatabase = process.env.GATEHOUSE_DATABASE_URL;
const redisUrl = process.env.GATEHOUSE_TEST_REDIS_URL;
for (const via of ['PostgreSQL', 'Redis']) {
  const missing = !sharedDatabase
    ? 'several instances need PostgreSQL (GATEHOUSE_DATABASE_URL): one SQLite file serves one instance'
    : via === 'Redis' && !redisUrl && 'GATEHOUSE_TEST_REDIS_URL is not set';
  if (missing && process.env.CI === 'true' && sharedDatabase) throw new Error(missing);
  describe(`two instances through ${via}`, { skip: missing }, () => {
    let server;
    let twin;
    const made = [];
    const at = (url, user) => {
      const client = createClient(url, server.publishableKey, {
        auth: { persistSession: false, autoRefreshToken: false },
        ...(user ? { accessToken: async () => server.tokenFor(user) } : {}),
        realtime: { transport: ws },
      });
      made.push(client);
      return client;
    };

    before(async () => {
      const env = via === 'Redis' ? { GATEHOUSE_REDIS_URL: redisUrl } : {};
      server = await startGatehouse(shop, env);
      twin = await server.twin(env);
    });
    after(async () => {
      for (const client of made) await client.removeAllChannels();
      await server?.stop();
    });

    test('a write on one instance reaches subscribers on the other, under their policies', async () => {
      const adaId = randomUUID();
      const boId = randomUUID();
      const adaThere = at(twin.url, adaId);
      const boThere = at(twin.url, boId);
      const adaChannel = adaThere.channel('ada-orders');
      const adaSees = collect(adaChannel, 'orders');
      const boChannel = boThere.channel('bo-orders');
      const boSees = collect(boChannel, 'orders');
      assert.equal(await subscribed(adaChannel), 'SUBSCRIBED');
      assert.equal(await subscribed(boChannel), 'SUBSCRIBED');

      const adaHere = at(server.url, adaId);
      const { data: order, error } = await adaHere.from('orders').insert({ total_cents: 700 }).select().single();
      assert.equal(error, null);
      await adaHere.from('orders').update({ note: 'twice' }).eq('id', order.id);
      await until(adaSees, 2);
      assert.deepEqual(adaSees.map((change) => change.eventType), ['INSERT', 'UPDATE']);
      assert.deepEqual(adaSees[0].new, order);

      // And the other way: Bo listens here, writes there.
      const boHereChannel = at(server.url, boId).channel('bo-here');
      const boHereSees = collect(boHereChannel, 'orders');
      assert.equal(await subscribed(boHereChannel), 'SUBSCRIBED');
      const { data: his } = await boThere.from('orders').insert({ total_cents: 9 }).select().single();
      await until(boHereSees, 1);
      await until(boSees, 1);
      await pause(200);
      assert.deepEqual(boHereSees.map((change) => change.new.id), [his.id]);
      assert.deepEqual(boSees.map((change) => change.new.id), [his.id], "never Ada's");
      assert.equal(adaSees.length, 2, "nor does Ada hear of Bo's");
    });

    test('broadcasts cross instances, from clients and from the server', async () => {
      const room = `room-${via}`;
      const here = at(server.url).channel(room, { config: { broadcast: { ack: true } } });
      const there = at(twin.url).channel(room);
      const heard = [];
      there.on('broadcast', { event: 'cursor' }, ({ payload }) => heard.push(payload));
      assert.equal(await subscribed(here), 'SUBSCRIBED');
      assert.equal(await subscribed(there), 'SUBSCRIBED');
      assert.equal(await here.send({ type: 'broadcast', event: 'cursor', payload: { x: 1 } }), 'ok');
      await until(heard, 1);
      assert.deepEqual(heard, [{ x: 1 }]);

      // The REST broadcast lands on one instance; a subscriber of the other hears it.
      const service = createClient(server.url, server.secretKey, {
        auth: { persistSession: false, autoRefreshToken: false },
        realtime: { transport: ws },
      });
      assert.equal(await service.channel(room).send({ type: 'broadcast', event: 'cursor', payload: { x: 2 } }), 'ok');
      await until(heard, 2);
      assert.deepEqual(heard[1], { x: 2 });

      // Longer than a PostgreSQL notification carries: it travels stored.
      const long = { text: 'x'.repeat(20_000) };
      assert.equal(await here.send({ type: 'broadcast', event: 'cursor', payload: long }), 'ok');
      await until(heard, 3);
      assert.deepEqual(heard[2], long);
    });

    test('presence is one state across instances', async () => {
      const lobby = `lobby-${via}`;
      const adaChannel = at(server.url).channel(lobby, { config: { presence: { key: 'ada' } } });
      const boChannel = at(twin.url).channel(lobby, { config: { presence: { key: 'bo' } } });
      const adaJoined = next((done) => boChannel.on('presence', { event: 'join' }, ({ key }) => {
        if (key === 'ada') done(key);
      }));
      const adaLeft = next((done) => boChannel.on('presence', { event: 'leave' }, ({ key }) => {
        if (key === 'ada') done(key);
      }));
      assert.equal(await subscribed(adaChannel), 'SUBSCRIBED');
      assert.equal(await subscribed(boChannel), 'SUBSCRIBED');
      assert.equal(await adaChannel.track({ status: 'online' }), 'ok');
      assert.equal(await adaJoined, 'ada');
      assert.equal(await boChannel.track({ status: 'away' }), 'ok');

      // A latecomer on either instance is told of both at once.
      const late = at(twin.url).channel(lobby, { config: { presence: { key: 'cy' } } });
      const synced = next((done) => late.on('presence', { event: 'sync' }, () => {
        if (Object.keys(late.presenceState()).length === 2) done(late.presenceState());
      }));
      assert.equal(await subscribed(late), 'SUBSCRIBED');
      const state = await synced;
      assert.deepEqual(Object.keys(state).sort(), ['ada', 'bo']);
      assert.equal(state.ada[0].status, 'online');

      await adaChannel.unsubscribe();
      assert.equal(await adaLeft, 'ada');
      await pause(200);
      assert.deepEqual(Object.keys(late.presenceState()), ['bo']);
    });
  });
}
