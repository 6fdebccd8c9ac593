// ctx.db: a supabase-js-like query builder over the host's `run`, which runs
// each query through the data API inside the call's transaction. Awaiting a
// query gives { data, error, count }, as supabase-js does.
(run) => {
  const text = (value) => {
    const s = String(value);
    return /[,()"\\]/.test(s) ? `"${s.replace(/["\\]/g, (c) => `\\${c}`)}"` : s;
  };
  const list = (values) => `(${values.map(text).join(',')})`;
  // An array or JSON operand as the query grammar reads it.
  const operand = (value) =>
    Array.isArray(value) ? `{${value.map(text).join(',')}}` : typeof value === 'object' ? JSON.stringify(value) : String(value);
  class Query {
    constructor(table) {
      this.query = { table: String(table), method: 'select', params: [], representation: false };
      this.one = null;
      this.head = false;
      this.throws = false;
    }
    select(columns = '*', { head = false, count } = {}) {
      // Whitespace outside double quotes means nothing to the grammar.
      this.query.params.push(['select', String(columns).replace(/\s+(?=(?:[^"]*"[^"]*")*[^"]*$)/g, '')]);
      if (this.query.method === 'select') {
        this.head = head;
        if (count) this.query.count = count;
      } else {
        this.query.representation = true;
      }
      return this;
    }
    write(method, body, count) {
      this.query.method = method;
      if (body !== undefined) this.query.body = body;
      if (count) this.query.count = count;
      return this;
    }
    insert(values, { count } = {}) {
      return this.write('insert', values, count);
    }
    upsert(values, { onConflict, ignoreDuplicates = false, count } = {}) {
      if (onConflict !== undefined) this.query.params.push(['on_conflict', String(onConflict)]);
      this.query.resolution = ignoreDuplicates ? 'ignore' : 'merge';
      return this.write('insert', values, count);
    }
    update(values, { count } = {}) {
      return this.write('update', values, count);
    }
    delete({ count } = {}) {
      return this.write('delete', undefined, count);
    }
    filter(column, operator, value) {
      this.query.params.push([String(column), `${operator}.${value}`]);
      return this;
    }
    not(column, operator, value) {
      return this.filter(column, `not.${operator}`, value);
    }
    or(conditions) {
      this.query.params.push(['or', `(${conditions})`]);
      return this;
    }
    match(values) {
      for (const [column, value] of Object.entries(values)) this.eq(column, value);
      return this;
    }
    in(column, values) {
      return this.filter(column, 'in', list(values));
    }
    contains(column, value) {
      return this.filter(column, 'cs', operand(value));
    }
    containedBy(column, value) {
      return this.filter(column, 'cd', operand(value));
    }
    overlaps(column, value) {
      return this.filter(column, 'ov', operand(value));
    }
    textSearch(column, query, { config, type } = {}) {
      const kind = { plain: 'pl', phrase: 'ph', websearch: 'w' }[type] ?? '';
      return this.filter(column, `${kind}fts${config ? `(${config})` : ''}`, query);
    }
    order(column, { ascending = true, nullsFirst } = {}) {
      let term = `${column}.${ascending ? 'asc' : 'desc'}`;
      if (nullsFirst !== undefined) term += nullsFirst ? '.nullsfirst' : '.nullslast';
      this.query.params.push(['order', term]);
      return this;
    }
    limit(count) {
      this.query.params.push(['limit', String(count)]);
      return this;
    }
    range(from, to) {
      this.query.params.push(['offset', String(from)], ['limit', String(to - from + 1)]);
      return this;
    }
    single() {
      this.one = 'single';
      return this;
    }
    maybeSingle() {
      this.one = 'maybe';
      return this;
    }
    throwOnError() {
      this.throws = true;
      return this;
    }
    answer() {
      const answer = JSON.parse(run(JSON.stringify(this.query)));
      if (answer.error) return answer;
      if (this.head) answer.data = null;
      if (this.one === null || answer.data === null) return answer;
      const rows = answer.data;
      if (rows.length === 1 || (this.one === 'maybe' && rows.length === 0)) {
        return { ...answer, data: rows[0] ?? null };
      }
      const error = { message: 'JSON object requested, multiple (or no) rows returned', code: 'PGRST116', details: null, hint: null };
      return { data: null, count: null, error };
    }
    then(resolve, reject) {
      try {
        const answer = this.answer();
        if (answer.error && this.throws) {
          return Promise.reject(Object.assign(new Error(answer.error.message), answer.error)).then(resolve, reject);
        }
        return Promise.resolve(answer).then(resolve, reject);
      } catch (error) {
        return Promise.reject(error).then(resolve, reject);
      }
    }
  }
  for (const operator of ['eq', 'neq', 'gt', 'gte', 'lt', 'lte', 'like', 'ilike', 'is']) {
    Query.prototype[operator] = function (column, value) {
      // Patterns and is take their value as written, as the query grammar reads them.
      const raw = ['like', 'ilike', 'is'].includes(operator);
      return this.filter(column, operator, raw ? value : text(value));
    };
  }
  return { from: (table) => new Query(table) };
}
