// Small async helpers shared by the interop tests.

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function deferred() {
  let resolve, reject;
  const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
  return { promise, resolve, reject };
}

/** Reject with `label` if `promise` does not settle within `ms`. */
export function within(ms, promise, label = 'operation') {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${label}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Poll `check()` until it returns a truthy value; resolves with that value. */
export async function until(check, { timeout = 5000, every = 20, label = 'condition' } = {}) {
  const t0 = Date.now();
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() - t0 > timeout) {
      throw new Error(`timed out after ${timeout} ms waiting for ${label}`);
    }
    await sleep(every);
  }
}

/** A fresh channel prefix, so that tests sharing one server never see each other's messages. */
let counter = 0;
export function uniqueChannel(prefix = 't') {
  counter += 1;
  return `/${prefix}${process.pid}x${counter}${Math.random().toString(36).slice(2, 7)}`;
}

/** Data used to check that payloads travel byte-exact (types, nesting, unicode, escapes). */
export function richData(extra = {}) {
  return {
    text: 'héllo wörld – 你好 – 🚀',
    quotes: `"double" 'single' \\back\\slash`,
    html: '</script><script>alert(1)</script>',
    control: 'tab\tnewline\ncr\r',
    separators: 'ls\u2028ps\u2029',
    int: 42,
    negative: -7,
    float: 3.25,
    big: 9007199254740991,
    bool: true,
    no: false,
    nil: null,
    empty: '',
    arr: [1, 'two', { three: [3] }, [], {}],
    nested: { a: { b: { c: { d: 'deep' } } } },
    ...extra,
  };
}

/**
 * A seeded pseudo-random generator (mulberry32): returns a function giving floats in [0, 1).
 * The same seed gives the same sequence, so a failure under random timing can be replayed.
 */
export function seededRandom(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
