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

async function take(ctx, productId, quantity) {
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    const { data: product, error } = await ctx.db
      .from('products')
      .select('price_cents, stock')
      .eq('id', productId)
      .maybeSingle();
    if (error) throw new Error(error.message);
    if (!product) throw new Error(`no product ${productId}`);
    if (product.stock < quantity) throw new Error(`out of stock: product ${productId}`);
    const { data: taken, error: failed } = await ctx.admin.db
      .from('products')
      .update({ stock: product.stock - quantity })
      .eq('id', productId)
      .eq('stock', product.stock)
      .select('id');
    if (failed) throw new Error(failed.message);
    if (taken.length === 1) return product.price_cents * quantity;
  }
  throw new Error('the shop is busy; try again');
}

export default async ({ items }, ctx) => {
  const wanted = lines(items);
  let total = 0;
  for (const [productId, quantity] of wanted) {
    total += await take(ctx, productId, quantity);
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
