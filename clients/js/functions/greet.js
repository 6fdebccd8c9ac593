export default ({ name }, ctx) => {
  if (ctx.request.method === 'GET') return `hello, ${ctx.request.query.name ?? 'stranger'}`;
  return { hello: name ?? 'stranger', method: ctx.request.method, user: ctx.user?.id ?? null };
};
