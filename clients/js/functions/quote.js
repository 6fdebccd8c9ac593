// The price comes from the server's list, never from the client.
const PRICES = { tea: 450, cake: 325 };

export default ({ items }) => {
  let total = 0;
  for (const { product, quantity } of items) {
    if (!(product in PRICES)) throw new Error(`unknown product: ${product}`);
    if (!Number.isInteger(quantity) || quantity < 1) throw new Error('quantity must be a positive whole number');
    total += PRICES[product] * quantity;
  }
  return { total_cents: total };
};
