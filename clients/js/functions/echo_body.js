// Answers the body it was sent, as the function sees it.
export default (args, ctx) => ({ body: ctx.request.body });
