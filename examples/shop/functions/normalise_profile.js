// Before a profile is inserted or updated: tidy what the user typed and refuse
// what no tidying makes acceptable. The table's own checks (lengths) and
// policies then apply to the row this returns.

// Control characters, zero-width ones and the bidirectional overrides that
// make a name display as something else.
const HIDDEN = /[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]/;

const tidy = (text) => String(text).normalize('NFC').trim().replace(/\s+/g, ' ');

export default (args, ctx) => {
  const row = ctx.trigger.new;
  const name = tidy(row.display_name ?? '');
  if (HIDDEN.test(name)) throw new Error('display_name: no control, invisible or direction characters');
  if (name === '') throw new Error('display_name: required');
  const bio = row.bio == null ? '' : tidy(row.bio);
  return { ...row, display_name: name, bio: bio === '' ? null : bio };
};
