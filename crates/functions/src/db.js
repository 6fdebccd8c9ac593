// ctx.db: a supabase-js-like query builder over the host's `read`, which runs
// each query as the caller through the data API. Awaiting a query gives
// { data, error }, as supabase-js does.
(read) => {
  const text = (value) => {
    const s = String(value);
    return /[,()"\\]/.test(s) ? `"${s.replace(/["\\]/g, (c) => `\\${c}`)}"` : s;
  };
  class Query {
    constructor(table) {
      this.table = String(table);
      this.params = [];
      this.one = null;
    }
    select(columns = '*') {
      this.params.push(['select', String(columns).replace(/\s+(?=(?:[^"]*"[^"]*")*[^"]*$)/g, '')]);
      return this;
    }
    filter(column, operator, value) {
      this.params.push([String(column), `${operator}.${value}`]);
      return this;
    }
    not(column, operator, value) {
      return this.filter(column, `not.${operator}`, value);
    }
    or(conditions) {
      this.params.push(['or', `(${conditions})`]);
      return this;
    }
    in(column, values) {
      return this.filter(column, 'in', `(${values.map(text).join(',')})`);
    }
    order(column, { ascending = true, nullsFirst } = {}) {
      let term = `${column}.${ascending ? 'asc' : 'desc'}`;
      if (nullsFirst !== undefined) term += nullsFirst ? '.nullsfirst' : '.nullslast';
      this.params.push(['order', term]);
      return this;
    }
    limit(count) {
      this.params.push(['limit', String(count)]);
      return this;
    }
    range(from, to) {
      this.params.push(['offset', String(from)], ['limit', String(to - from + 1)]);
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
    then(resolve, reject) {
      try {
        const answer = JSON.parse(read(JSON.stringify({ table: this.table, params: this.params })));
        if (answer.error || this.one === null) return Promise.resolve(answer).then(resolve, reject);
        const rows = answer.data;
        if (rows.length === 1 || (this.one === 'maybe' && rows.length === 0)) {
          return Promise.resolve({ data: rows[0] ?? null, error: null }).then(resolve, reject);
        }
        const error = { message: 'JSON object requested, multiple (or no) rows returned' };
        return Promise.resolve({ data: null, error }).then(resolve, reject);
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
