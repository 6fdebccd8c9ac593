export default async (args, ctx) => ({ id: ctx.user.id, role: ctx.user.role });
