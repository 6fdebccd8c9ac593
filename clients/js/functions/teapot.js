export default () => ({
  $response: { status: 418, headers: { 'x-brewed': 'yes', 'set-cookie': 'stolen=1' }, body: { error: 'short and stout' } },
});
