// A verified webhook event, recorded once (the queue runs it with the secret key's rights).
export default async ({ event }, ctx) => {
  const { error } = await ctx.db.from('payments').insert({ event: event.id, kind: event.type });
  if (error) throw new Error(error.message);
};
