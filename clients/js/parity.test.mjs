// Behaviours an app moving from Supabase relies on, through supabase-js, with
// the settings that match Supabase's defaults (clients/js/supabase-defaults.toml).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createClient } from '@supabase/supabase-js';
import ws from 'ws';
import { startGatehouse } from './gatehouse.mjs';

const config = fileURLToPath(new URL('./supabase-defaults.toml', import.meta.url));

describe('Supabase defaults through supabase-js', () => {
  let server;
  const client = () =>
    createClient(server.url, server.publishableKey, {
      auth: { persistSession: false, autoRefreshToken: false },
      realtime: { transport: ws },
    });

  before(async () => {
    server = await startGatehouse(config);
  });
  after(async () => server?.stop());

  test('fixtures with short, common passwords sign up; the session alone changes the password', async () => {
    const supabase = client();
    const short = await supabase.auth.signUp({ email: 'fixture@example.com', password: '12345' });
    assert.equal(short.error.code, 'weak_password');
    assert.deepEqual(short.error.reasons, ['length']);
    const { data, error } = await supabase.auth.signUp({ email: 'fixture@example.com', password: 'password123' });
    assert.equal(error, null);
    assert.ok(data.session);
    const { error: updateError } = await supabase.auth.updateUser({ password: 'qwerty' });
    assert.equal(updateError, null);
    const { error: signInError } = await client().auth.signInWithPassword({ email: 'fixture@example.com', password: 'qwerty' });
    assert.equal(signInError, null);
  });

  test('tables and columns with capitals, spaces and accents', async () => {
    const supabase = client();
    const { data: signedUp } = await supabase.auth.signUp({ email: 'names@example.com', password: 'names-pass' });
    const { data: list, error } = await supabase.from('Customer Lists').insert({ id: 1, 'list name': 'Weekly' }).select().single();
    assert.equal(error, null);
    assert.equal(list.ownerId, signedUp.user.id);
    const { error: itemsError } = await supabase.from('Order Items').insert([
      { id: 10, listId: 1, 'unit price': 250, prénom: 'Zoë' },
      { id: 11, listId: 1, 'unit price': 900 },
    ]);
    assert.equal(itemsError, null);
    const { data: embedded, error: embedError } = await supabase
      .from('Customer Lists')
      .select('"list name", items:"Order Items"("unit price", prénom)')
      .order('unit price', { referencedTable: 'items', ascending: false });
    assert.equal(embedError, null);
    assert.deepEqual(embedded, [
      { 'list name': 'Weekly', items: [{ 'unit price': 900, prénom: null }, { 'unit price': 250, prénom: 'Zoë' }] },
    ]);
    const { data: dear } = await supabase.from('Order Items').select('id, createdAt').gt('unit price', 300).order('createdAt');
    assert.equal(dear.length, 1);
    assert.equal(dear[0].id, 11);
    const { data: renamed } = await supabase.from('Order Items').update({ prénom: 'Zoé' }).eq('prénom', 'Zoë').select('prénom');
    assert.deepEqual(renamed, [{ prénom: 'Zoé' }]);
    const { error: anonError } = await client().from('Order Items').select('id');
    assert.equal(anonError.code, '42501', 'no policy lets anon in');
  });

  test('JSON paths in select, filters and order', async () => {
    const supabase = client();
    await supabase.auth.signUp({ email: 'paths@example.com', password: 'paths-pass' });
    const { error } = await supabase.from('Customer Lists').insert([
      { id: 20, 'list name': 'Groceries', details: { kind: 'weekly', address: { city: 'Paris', zip: '75001' }, tags: ['food', 'home'] } },
      { id: 21, 'list name': 'Gifts', details: { kind: 'yearly', address: { city: 'Lyon' }, tags: ['family'] } },
    ]);
    assert.equal(error, null);
    const { data, error: readError } = await supabase
      .from('Customer Lists')
      .select('id, city:details->address->>city, details->tags->0')
      .in('id', [20, 21])
      .order('details->address->>city', { ascending: true });
    assert.equal(readError, null);
    assert.deepEqual(data, [
      { id: 21, city: 'Lyon', 0: 'family' },
      { id: 20, city: 'Paris', 0: 'food' },
    ]);
    const { data: weekly } = await supabase.from('Customer Lists').select('id').eq('details->>kind', 'weekly');
    assert.deepEqual(weekly, [{ id: 20 }]);
    // A JSON array goes as JSON text; supabase-js writes a JS array as a PostgreSQL array literal.
    const { data: tagged } = await supabase.from('Customer Lists').select('id').contains('details->tags', JSON.stringify(['family']));
    assert.deepEqual(tagged, [{ id: 21 }]);
  });

  test('array columns with contains, containedBy and overlaps', async () => {
    const supabase = client();
    await supabase.auth.signUp({ email: 'arrays@example.com', password: 'arrays-pass' });
    const { data: inserted, error } = await supabase
      .from('Customer Lists')
      .insert([
        { id: 30, 'list name': 'Tea', labels: ['drinks', 'hot'] },
        { id: 31, 'list name': 'Ice', labels: ['cold', 'drinks, iced'] },
      ])
      .select('id, labels');
    assert.equal(error, null);
    assert.deepEqual(inserted, [{ id: 30, labels: ['drinks', 'hot'] }, { id: 31, labels: ['cold', 'drinks, iced'] }]);
    const ids = async (query) => (await query.order('id')).data?.map((row) => row.id);
    const lists = () => supabase.from('Customer Lists').select('id').in('id', [30, 31]);
    assert.deepEqual(await ids(lists().contains('labels', ['hot'])), [30]);
    assert.deepEqual(await ids(lists().containedBy('labels', ['drinks', 'hot', 'tea'])), [30]);
    assert.deepEqual(await ids(lists().overlaps('labels', ['cold', 'hot'])), [30, 31]);
  });

  test('full-text search with textSearch, in each syntax and language', async () => {
    const supabase = client();
    await supabase.auth.signUp({ email: 'search@example.com', password: 'search-pass' });
    const { error } = await supabase.from('Customer Lists').insert([
      { id: 40, 'list name': 'Cats', notes: 'The cats are running after the rats' },
      { id: 41, 'list name': 'Hats', notes: 'The cat in the hat sat on a mat' },
      { id: 42, 'list name': 'Dogs', notes: 'A dog ran; the runner runs' },
    ]);
    assert.equal(error, null);
    const other = client();
    await other.auth.signUp({ email: 'search-other@example.com', password: 'search-pass' });
    await other.from('Customer Lists').insert({ id: 43, 'list name': 'Hidden', notes: 'cats hats dogs rats' });
    const ids = async (query) => {
      const { data, error: searchError } = await query.order('id');
      assert.equal(searchError, null);
      return data.map((row) => row.id);
    };
    const lists = () => supabase.from('Customer Lists').select('id');
    assert.deepEqual(await ids(lists().textSearch('notes', 'cat & !rat')), [41]);
    assert.deepEqual(await ids(lists().textSearch('notes', 'run:*')), [40, 42]);
    assert.deepEqual(await ids(lists().textSearch('notes', 'cat <3> hat')), [41]);
    assert.deepEqual(await ids(lists().textSearch('notes', 'running rats', { type: 'plain' })), [40]);
    assert.deepEqual(await ids(lists().textSearch('notes', 'cat in the hat', { type: 'phrase' })), [41]);
    assert.deepEqual(await ids(lists().textSearch('notes', '"the cat" or dog -runs', { type: 'websearch' })), [40, 41]);
    assert.deepEqual(await ids(lists().textSearch('notes', 'cats', { config: 'simple' })), [40]);
    assert.deepEqual(await ids(lists().textSearch('notes', 'cats', { type: 'plain', config: 'english' })), [40, 41]);
    const { error: malformed } = await lists().textSearch('notes', 'cat dog');
    assert.equal(malformed?.code, '42601', 'PostgreSQL\'s syntax error in tsquery');
  });

  test('many-to-many through a junction keyed by both sides', async () => {
    const supabase = client();
    await supabase.auth.signUp({ email: 'roster@example.com', password: 'roster-pass' });
    for (const [table, rows] of [
      ['players', [{ id: 1, name: 'Ann' }, { id: 2, name: 'Ben' }]],
      ['squads', [{ id: 10, name: 'red' }, { id: 11, name: 'blue' }]],
      ['Squad Players', [{ playerId: 1, squadId: 10 }, { playerId: 1, squadId: 11 }, { playerId: 2, squadId: 11 }]],
    ]) {
      const { error } = await supabase.from(table).insert(rows);
      assert.equal(error, null, table);
    }
    const { error: twice } = await supabase.from('Squad Players').insert({ playerId: 2, squadId: 11 });
    assert.equal(twice.code, '23505', 'each pair once');
    const { data, error } = await supabase
      .from('players')
      .select('name, squads(name)')
      .order('id')
      .order('name', { referencedTable: 'squads' });
    assert.equal(error, null);
    assert.deepEqual(data, [
      { name: 'Ann', squads: [{ name: 'blue' }, { name: 'red' }] },
      { name: 'Ben', squads: [{ name: 'blue' }] },
    ]);
  });

  test('an anonymous user becomes permanent with updateUser({ email, password })', async () => {
    const supabase = client();
    const { data: anon, error } = await supabase.auth.signInAnonymously();
    assert.equal(error, null);
    assert.equal(anon.user.is_anonymous, true);
    const { data: order, error: orderError } = await supabase.from('orders').insert({ note: 'in the cart' }).select().single();
    assert.equal(orderError, null);

    const { data: upgraded, error: upgradeError } = await supabase.auth.updateUser({
      email: 'kept@example.com',
      password: 'kept-pass',
    });
    assert.equal(upgradeError, null);
    assert.equal(upgraded.user.is_anonymous, false);
    assert.equal(upgraded.user.email, 'kept@example.com');

    const later = client();
    const { data: signedIn, error: signInError } = await later.auth.signInWithPassword({
      email: 'kept@example.com',
      password: 'kept-pass',
    });
    assert.equal(signInError, null);
    assert.equal(signedIn.user.id, anon.user.id, 'the same account');
    assert.equal(signedIn.user.is_anonymous, false);
    const { data: mine } = await later.from('orders').select('id, note').eq('id', order.id);
    assert.deepEqual(mine, [{ id: order.id, note: 'in the cart' }], 'its rows came along');

    const second = client();
    const { data: other } = await second.auth.signInAnonymously();
    assert.ok(other.session);
    const { error: clash } = await second.auth.updateUser({ email: 'kept@example.com', password: 'kept-pass' });
    assert.equal(clash.code, 'email_exists');
  });
});
