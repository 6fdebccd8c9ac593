// checkout({ items: [{ product_id, quantity }] }): places an order for the
// caller. Prices come from the catalogue, never from the client (any price or
// total in the request is ignored); stock is checked and lowered; the order and
// its lines are written; all in the call's one transaction, so a throw keeps
// nothing.

const MAX_LINES = 50;
// Another checkout may lower the same stock between our read and our write:
// the write is conditional on the stock we read, and read again when it missed.
const MAX_ATTEMPTS = 50;

function lines(items) {
  if (!Array.isArray(items) || items.length === 0 || items.length > MAX_LINES) {
    throw new Error(`items must be a list of 1 to ${MAX_LINES} lines`);
  }
  const wanted = new Map();
  for (const item of items) {
    const productId = item?.product_id;
    const quantity = item?.quantity;
    if (!Number.isSafeInteger(productId) || !Number.isSafeInteger(quantity) || quantity < 1 || quantity > 100) {
      throw new Error('each line is { product_id, quantity } with a quantity from 1 to 100');
    }
    wanted.set(productId, (wanted.get(productId) ?? 0) + quantity);
  }
  return wanted;
}

// One product's price and stock, read again after a conditional write missed.
async function product(ctx, productId) {
  const { data, error } = await ctx.db
    .from('products')
    .select('id, price_cents, stock')
    .eq('id', productId)
    .maybeSingle();
  if (error) throw new Error(error.message);
  return data;
}

// Lowers one product's stock from what was read, if no other checkout changed
// it meanwhile; answers the line's price.
async function take(ctx, productId, quantity, read) {
  let known = read;
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    if (!known) throw new Error(`no product ${productId}`);
    if (known.stock < quantity) throw new Error(`out of stock: product ${productId}`);
    const { data: taken, error } = await ctx.admin.db
      .from('products')
      .update({ stock: known.stock - quantity })
      .eq('id', productId)
      .eq('stock', known.stock)
      .select('id');
    if (error) throw new Error(error.message);
    if (taken.length === 1) return known.price_cents * quantity;
    known = await product(ctx, productId);
  }
  throw new Error('the shop is busy; try again');
}

export default async ({ items }, ctx) => {
  const wanted = lines(items);
  // Every product read at once, before the first write: on SQLite the writer
  // is held from the first write to the commit, so the less after it the better.
  const { data: read, error: unread } = await ctx.db
    .from('products')
    .select('id, price_cents, stock')
    .in('id', [...wanted.keys()]);
  if (unread) throw new Error(unread.message);
  const catalogue = new Map(read.map((row) => [row.id, row]));
  let total = 0;
  for (const [productId, quantity] of wanted) {
    total += await take(ctx, productId, quantity, catalogue.get(productId));
  }
  const { data: order, error } = await ctx.db
    .from('orders')
    .insert({ total_cents: total })
    .select('id, status, total_cents')
    .single();
  if (error) throw new Error(error.message);
  const rows = [...wanted].map(([product_id, quantity]) => ({ order_id: order.id, product_id, quantity }));
  const { error: unlisted } = await ctx.db.from('order_items').insert(rows);
  if (unlisted) throw new Error(unlisted.message);
  ctx.log.info('order placed', { order: order.id, lines: rows.length, total_cents: total });
  return order;
};
