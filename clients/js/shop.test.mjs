// supabase-js v2, unchanged, against examples/shop on a real Gatehouse.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { clientsOf, startGatehouse } from './gatehouse.mjs';

const shop = fileURLToPath(new URL('./shop.toml', import.meta.url));
const ALICE = '0190c2a4-7e5b-7000-8000-00000000a11c';
const BOB = '0190c2a4-7e5b-7000-8000-000000000b0b';

describe('examples/shop through supabase-js', () => {
  let server;
  let service;
  let anon;
  let alice;
  let bob;
  let as;

  before(async () => {
    server = await startGatehouse(shop);
    ({ service, anon, as } = clientsOf(server));
    alice = as(ALICE);
    bob = as(BOB);
    const { error } = await service.from('products').insert([
      { name: 'Kettle', price_cents: 2999 },
      { name: 'Teapot', price_cents: 1999 },
      { name: 'Cup', price_cents: 499 },
      { name: 'Retired', price_cents: 100, active: false },
    ]);
    assert.equal(error, null);
  });

  after(async () => server?.stop());

  test('anyone reads the active catalogue with filters, order, range and count', async () => {
    const { data, error, count } = await anon
      .from('products')
      .select('name, price_cents', { count: 'exact' })
      .gte('price_cents', 1000)
      .order('price_cents', { ascending: false })
      .range(0, 0);
    assert.equal(error, null);
    assert.deepEqual(data, [{ name: 'Kettle', price_cents: 2999 }]);
    assert.equal(count, 2);
    const { data: cheap } = await anon.from('products').select('name').or('price_cents.lt.500,name.eq.Teapot').order('name');
    assert.deepEqual(cheap, [{ name: 'Cup' }, { name: 'Teapot' }]);
    const { data: some } = await anon.from('products').select('name').in('name', ['Cup', 'Retired']);
    assert.deepEqual(some, [{ name: 'Cup' }], 'inactive products stay hidden');
    const { data: like } = await anon.from('products').select('name').ilike('name', '%POT%');
    assert.deepEqual(like, [{ name: 'Teapot' }]);
    const { data: csv, error: csvError } = await anon.from('products').select('name, price_cents').order('name').csv();
    assert.equal(csvError, null);
    assert.equal(csv, 'name,price_cents\nCup,499\nKettle,2999\nTeapot,1999\n');
  });

  test('only the server writes the catalogue', async () => {
    const { error } = await alice.from('products').insert({ name: 'Free', price_cents: 0 });
    assert.equal(error.code, '42501');
  });

  test('orders belong to the signed-in user', async () => {
    const { data: order, error } = await alice.from('orders').insert({ note: 'gift wrap' }).select().single();
    assert.equal(error, null);
    assert.equal(order.user_id, ALICE);
    assert.equal(order.status, 'pending');
    const { error: lineError } = await alice
      .from('order_items')
      .insert({ order_id: order.id, product_id: 1, quantity: 2 });
    assert.equal(lineError, null);

    const { data: mine } = await alice.from('orders').select('id, note').eq('id', order.id).maybeSingle();
    assert.deepEqual(mine, { id: order.id, note: 'gift wrap' });
    const { data: embedded, error: embedError } = await alice
      .from('orders')
      .select('id, order_items(quantity, products(name))')
      .eq('id', order.id)
      .single();
    assert.equal(embedError, null);
    assert.deepEqual(embedded, { id: order.id, order_items: [{ quantity: 2, products: { name: 'Kettle' } }] });
    const { data: byColumn, error: byColumnError } = await alice
      .from('order_items')
      .select('quantity, product:product_id(name)')
      .eq('order_id', order.id);
    assert.equal(byColumnError, null);
    assert.deepEqual(byColumn, [{ quantity: 2, product: { name: 'Kettle' } }]);
    const { data: picked } = await alice
      .from('orders')
      .select('id, order_items(quantity)')
      .eq('id', order.id)
      .or('quantity.gt.5,quantity.eq.3', { referencedTable: 'order_items' });
    assert.deepEqual(picked, [{ id: order.id, order_items: [] }], 'the condition picks embedded rows');
    const { data: theirs, error: single } = await bob.from('orders').select().eq('id', order.id).single();
    assert.equal(theirs, null);
    assert.equal(single.code, 'PGRST116');
    const { data: lines } = await bob.from('order_items').select();
    assert.deepEqual(lines, []);

    const { error: forged } = await bob.from('order_items').insert({ order_id: order.id, product_id: 1, quantity: 1 });
    assert.equal(forged.code, '42501', 'no lines on somebody else’s order');
    const { error: owner } = await bob.from('orders').insert({ user_id: ALICE });
    assert.equal(owner.code, 'server_set_column');

    const { data: updated, error: updateError } = await alice
      .from('orders')
      .update({ note: 'no wrap' })
      .eq('id', order.id)
      .select('note');
    assert.equal(updateError, null);
    assert.deepEqual(updated, [{ note: 'no wrap' }]);
    const { error: status } = await alice.from('orders').update({ status: 'paid' }).eq('id', order.id);
    assert.ok(status, 'status is set by the server');
    const { data: untouched } = await bob.from('orders').update({ note: 'mine now' }).eq('id', order.id).select();
    assert.deepEqual(untouched, []);
  });

  test('team members share projects, and delete them', async () => {
    await service.from('teams').insert({ name: 'red' });
    await service.from('team_members').insert({ team_id: 1, user_id: ALICE });
    const { data: created, error } = await alice.from('projects').insert({ team_id: 1, title: 'Apollo' }).select('id, title');
    assert.equal(error, null);
    assert.equal(created[0].title, 'Apollo');
    const { count } = await bob.from('projects').select('*', { count: 'exact', head: false });
    assert.equal(count, 0);
    const { data: gone, error: deleteError } = await alice.from('projects').delete().eq('id', created[0].id).select('title');
    assert.equal(deleteError, null);
    assert.deepEqual(gone, [{ title: 'Apollo' }]);
  });

  test('profiles: public names, private bios', async () => {
    const { error } = await alice.from('profiles').insert({ display_name: 'Alice', bio: 'tea' });
    assert.equal(error, null);
    const { data } = await anon.from('profiles').select();
    assert.deepEqual(Object.keys(data[0]).sort(), ['display_name', 'id']);
    const { error: bio } = await anon.from('profiles').select('bio');
    assert.equal(bio.code, '42501');
    // One profile per user: upsert on the server-set owner column renames it.
    const { data: renamed, error: upsertError } = await alice
      .from('profiles')
      .upsert({ display_name: 'Alice L.' }, { onConflict: 'user_id' })
      .select('display_name');
    assert.equal(upsertError, null);
    assert.deepEqual(renamed, [{ display_name: 'Alice L.' }]);
    const { error: takeover } = await bob
      .from('profiles')
      .upsert({ id: data[0].id, display_name: 'Bob' })
      .select();
    assert.equal(takeover.code, '42501');
    const { data: names } = await anon.from('profiles').select('display_name');
    assert.deepEqual(names, [{ display_name: 'Alice L.' }]);
  });

  test('a before trigger tidies profiles and refuses what it cannot tidy', async () => {
    const carol = as('0190c2a4-7e5b-7000-8000-00000000ca01');
    const { data, error } = await carol
      .from('profiles')
      .insert({ display_name: '  Carol \n  Jones ', bio: '   ' })
      .select('display_name, bio')
      .single();
    assert.equal(error, null);
    assert.deepEqual(data, { display_name: 'Carol Jones', bio: null });
    const { error: hidden } = await carol.from('profiles').update({ display_name: 'Carol\u202egnp.exe' }).not('id', 'is', null);
    assert.equal(hidden.code, 'P0001');
    assert.match(hidden.message, /direction/);
    const { error: blank } = await as('0190c2a4-7e5b-7000-8000-00000000ca02').from('profiles').insert({ display_name: ' \t ' });
    assert.equal(blank.code, 'P0001');
    const { data: kept } = await carol.from('profiles').select('display_name').eq('display_name', 'Carol Jones');
    assert.equal(kept.length, 1);
  });

  test('checkout prices on the server and sells exactly the stock to concurrent buyers', async () => {
    const { data: added, error } = await service
      .from('products')
      .insert({ name: 'Mug', price_cents: 850, stock: 12 })
      .select('id');
    assert.equal(error, null);
    const mug = added[0].id;
    // A price sent by the client is ignored: the catalogue's counts.
    const { data: order, error: checkoutError } = await alice.rpc('checkout', {
      items: [{ product_id: mug, quantity: 2, price_cents: 1 }],
    });
    assert.equal(checkoutError, null);
    assert.equal(order.total_cents, 1700);
    const { data: lines } = await alice.from('order_items').select('quantity').eq('order_id', order.id);
    assert.deepEqual(lines, [{ quantity: 2 }]);
    const { error: tooMany } = await alice.rpc('checkout', { items: [{ product_id: mug, quantity: 11 }] });
    assert.equal(tooMany.code, 'P0001');
    assert.equal(tooMany.message, `out of stock: product ${mug}`);
    // The last ten, fifty buyers at once.
    const buyers = Array.from({ length: 50 }, (_, n) => as(`0190c2a4-7e5b-7000-8000-${String(n).padStart(12, '0')}`));
    const answers = await Promise.all(
      buyers.map((buyer) => buyer.rpc('checkout', { items: [{ product_id: mug, quantity: 1 }] })),
    );
    assert.equal(answers.filter(({ error }) => error === null).length, 10);
    const refusals = answers.filter(({ error }) => error?.message === `out of stock: product ${mug}`);
    assert.equal(refusals.length, 40);
    const { data: left } = await service.from('products').select('stock').eq('id', mug).single();
    assert.equal(left.stock, 0);
  });

  test('complete_lesson is validated and idempotent', async () => {
    const { data: first, error } = await alice.rpc('complete_lesson', { lesson_id: 3, score: 80 });
    assert.equal(error, null);
    assert.equal(first.recorded, true);
    const { data: again } = await alice.rpc('complete_lesson', { lesson_id: 3, score: 20 });
    assert.deepEqual(again, { ...first, recorded: false });
    const { error: invalid } = await alice.rpc('complete_lesson', { lesson_id: 3, score: 101 });
    assert.equal(invalid.code, '22P02');
    const { error: anonymous } = await anon.rpc('complete_lesson', { lesson_id: 3, score: 1 });
    assert.equal(anonymous.code, '42501');
  });
});
