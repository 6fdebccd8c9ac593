// The realm's lockdown: run once on an engine's new context, before any
// function's code, so that many calls can share one context without one
// call leaving anything for the next. Every built-in object is frozen (a
// call cannot change what another call's code runs on), the engine's
// context-wide settings behind `Error` are removed, and the global object
// keeps only its built-ins: `sweep` deletes whatever a call added to it.
//
// `doors` holds the makers of the context object's doors (`(host) => door`),
// made once per realm rather than once per call; `reached` is the host's mark
// that a call tried on the request's own thread reached for a door. The kit
// (`sweep`, the makers and `tripwire`) is left frozen on the global object as
// `__gatehouse`: a function reaching it can only call pure makers, sweep its
// own globals or mark itself as needing its doors. `random` is the host's
// `Math.random`.
(doors, reached, random) => {
  'use strict';
  const { getPrototypeOf, getOwnPropertyDescriptors, freeze, defineProperty, isExtensible } = Object;
  const { ownKeys, getOwnPropertyDescriptor, deleteProperty, apply } = Reflect;
  const hasOwn = Object.hasOwn;

  // Context-wide state the engine keeps behind accessors: a
  // `prepareStackTrace` set by one call would run inside the next one's
  // errors. Frozen accessors still set it, so they go.
  deleteProperty(Error, 'prepareStackTrace');
  deleteProperty(Error, 'stackTraceLimit');
  // A finalizer runs when the engine collects, which may be inside a later call.
  deleteProperty(globalThis, 'FinalizationRegistry');
  // The engine's own is one xorshift stream per context: a few results of one
  // call would tell the state, and so the numbers of the calls after it.
  defineProperty(Math, 'random', { value: random });

  // The override mistake: assigning to an own property that an object
  // inherits read-only fails, so freezing `Error.prototype` would break
  // `this.name = 'MyError'`. Properties that code commonly overrides on its
  // own objects become accessors whose setter defines the property on the
  // object assigned to (and refuses on the prototype itself).
  const overridable = (proto, keys) => {
    for (const key of keys ?? ownKeys(proto)) {
      const described = getOwnPropertyDescriptor(proto, key);
      if (!described || !hasOwn(described, 'value') || !described.writable) continue;
      const { value } = described;
      defineProperty(proto, key, {
        get() {
          return value;
        },
        set(replacement) {
          if (this === proto) {
            throw new TypeError(`Cannot assign to read only property '${String(key)}' of a built-in`);
          }
          if (hasOwn(this, key)) {
            this[key] = replacement;
          } else {
            defineProperty(this, key, { value: replacement, writable: true, enumerable: true, configurable: true });
          }
        },
        enumerable: described.enumerable,
        configurable: false,
      });
    }
  };
  overridable(Object.prototype);
  overridable(Function.prototype, ['constructor', 'toString', 'bind', 'call', 'apply']);
  overridable(Array.prototype, ['constructor', 'toString', 'push']);
  overridable(Promise.prototype, ['constructor']);
  const errors = [Error, TypeError, RangeError, SyntaxError, ReferenceError, EvalError, URIError, AggregateError];
  for (const name of ['InternalError', 'SuppressedError']) {
    if (typeof globalThis[name] === 'function') errors.push(globalThis[name]);
  }
  for (const E of errors) {
    overridable(E.prototype, ['constructor', 'message', 'name', 'toString']);
  }

  // The prototype of a context object whose doors are not there: reading one
  // marks the call (and throws, though code may catch that).
  const tripwire = Object.create(
    Object.prototype,
    Object.fromEntries(
      ['db', 'admin', 'log', 'fetch', 'secrets', 'jobs'].map((door) => [
        door,
        {
          get() {
            reached();
            throw new Error('this call runs again with its doors');
          },
        },
      ]),
    ),
  );

  // Every object reachable from the global object, plus those only syntax
  // or built-in results reach, is frozen.
  const hidden = [
    function* () {},
    async function () {},
    async function* () {},
    [][Symbol.iterator](),
    new Map().entries(),
    new Set().values(),
    ''[Symbol.iterator](),
    /x/g[Symbol.matchAll](''),
    typeof Iterator === 'function' ? Iterator.from([]).map((x) => x) : null,
    typeof Iterator === 'function' ? Iterator.from({ next: () => ({ done: true }) }) : null,
    doors,
    tripwire,
  ];
  const seen = new Set([globalThis]);
  const pending = [];
  const reach = (value) => {
    if (((typeof value === 'object' && value !== null) || typeof value === 'function') && !seen.has(value)) {
      seen.add(value);
      pending.push(value);
    }
  };
  const reachProperties = (object) => {
    const described = getOwnPropertyDescriptors(object);
    for (const key of ownKeys(described)) {
      const { value, get, set } = described[key];
      reach(value);
      reach(get);
      reach(set);
    }
  };
  reachProperties(globalThis);
  hidden.forEach(reach);
  while (pending.length > 0) {
    const next = pending.pop();
    reach(getPrototypeOf(next));
    reachProperties(next);
  }
  seen.delete(globalThis);
  for (const object of seen) freeze(object);

  // The global object stays extensible (a call may set its own globals),
  // but its built-ins can be neither replaced nor deleted.
  const sealGlobal = (key) => {
    const described = getOwnPropertyDescriptor(globalThis, key);
    defineProperty(globalThis, key, hasOwn(described, 'value') ? { writable: false, configurable: false } : { configurable: false });
  };
  defineProperty(globalThis, '__gatehouse', { value: null, writable: true, configurable: true });
  const builtIn = new Set(ownKeys(globalThis));
  const has = Set.prototype.has;
  // Deletes what a call added to the global object, which has `count` own
  // keys (the host counts them without making an array of them); false when
  // it cannot (the call made a property that cannot be deleted, froze the
  // global object or changed its prototype), and the realm must then be dropped.
  const globalPrototype = getPrototypeOf(globalThis);
  const sweep = (count) => {
    if (!isExtensible(globalThis) || getPrototypeOf(globalThis) !== globalPrototype) return false;
    // Built-ins cannot be deleted: the same count means nothing was added.
    if (count === builtIn.size) return true;
    for (const key of ownKeys(globalThis)) {
      if (!apply(has, builtIn, [key]) && !deleteProperty(globalThis, key)) return false;
    }
    return true;
  };
  globalThis.__gatehouse = freeze({ sweep: freeze(sweep), tripwire, ...doors });
  for (const key of builtIn) sealGlobal(key);
};
