// floodwall for Node: the native addon (Rust, napi-rs), plus one JS addition: calls to check/peek
// made in the same tick go to Rust as one batch (one Promise and one wake-up of the JS thread per
// batch instead of per call; each check is still its own atomic decision). Errors are Errors with
// `code` ERR_FLOODWALL_CONFIG / ERR_FLOODWALL_STORE, made by the Rust side's one mapping.
// `telemetry` (telemetry.js) holds tracing, logs and metrics.
'use strict'

const native = require('./native.js')

const { Limiter } = native
const SOURCES = ['redis', 'memory', 'cache', 'lease', 'fallback'] // order of SOURCES in src/limiter.rs
const queued = new WeakMap()
// A batch goes out when it reaches this size, so that several batches are in flight at once and
// Redis works on one while the JS thread settles another.
const MAX_BATCH = 32

const nullable = (x) => (Number.isNaN(x) ? null : x)

/** The limiter's limits as written, read once: decisions name them by index (see src/limiter.rs). */
const limitNames = new WeakMap()
function namesOf(limiter) {
  let names = limitNames.get(limiter)
  if (names === undefined) {
    names = limiter.limits
    limitNames.set(limiter, names)
  }
  return names
}

function decode({ data, names: extra, errors }, settle, names) {
  const name = (i) => (i < names.length ? names[i] : extra[i - names.length])
  let p = 0
  for (let i = 0; i < settle.length; i += 2) {
    const status = data[p]
    if (status < 0) {
      const j = -1 - status
      const err = new Error(errors[2 * j + 1])
      err.code = errors[2 * j]
      settle[i + 1](err)
      p += 1
      continue
    }
    const n = data[p + 7]
    const windows = new Array(n)
    let w = p + 8
    for (let k = 0; k < n; k++, w += 6) {
      windows[k] = {
        name: name(data[w]),
        limit: data[w + 1],
        window: data[w + 2],
        remaining: data[w + 3],
        resetAfter: data[w + 4],
        retryAfter: nullable(data[w + 5]),
      }
    }
    settle[i]({
      allowed: status === 1,
      limit: data[p + 1],
      remaining: data[p + 2],
      resetAfter: data[p + 3],
      retryAfter: nullable(data[p + 4]),
      limitedBy: data[p + 5] < 0 ? null : name(data[p + 5]),
      source: SOURCES[data[p + 6]],
      windows,
    })
    p = w
  }
}

function flush(limiter, q) {
  if (q.sent) return
  q.sent = true
  if (queued.get(limiter) === q) queued.delete(limiter)
  const failAll = (err) => {
    for (let i = 1; i < q.settle.length; i += 2) q.settle[i](err)
  }
  let pending
  try {
    pending = limiter._decideMany(q.keys, Float64Array.from(q.costs), q.traced ? q.traceparents : undefined)
  } catch (err) {
    return failAll(err) // never leave a caller's Promise unsettled
  }
  const names = namesOf(limiter)
  pending.then((batch) => decode(batch, q.settle, names), failAll)
}

/** cost 0 means peek; traceparent '' means none. */
function enqueue(limiter, key, cost, traceparent) {
  let q = queued.get(limiter)
  if (q === undefined) {
    q = { keys: [], costs: [], traceparents: [], traced: false, settle: [] }
    queued.set(limiter, q)
    queueMicrotask(() => flush(limiter, q))
  }
  const p = new Promise((resolve, reject) => {
    q.keys.push(key)
    q.costs.push(cost)
    q.traceparents.push(traceparent)
    if (traceparent !== '') q.traced = true
    q.settle.push(resolve, reject)
  })
  if (q.keys.length >= MAX_BATCH) flush(limiter, q)
  return p
}

/** The traceparent of well-formed options ('' when none), or null when they need the native checks. */
function plainTraceparent(options) {
  if (options === undefined) return ''
  if (options === null || typeof options !== 'object') return null
  const tp = options.traceparent
  if (tp === undefined || tp === null) return ''
  return typeof tp === 'string' ? tp : null
}

/** The cost of well-formed options, or 0 when they need the native checks. */
function plainCost(options) {
  if (options === undefined) return 1
  if (options === null || typeof options !== 'object') return 0
  let cost = 1
  for (const k in options) {
    if (k === 'traceparent') continue
    if (k !== 'cost') return 0
    const c = options.cost
    if (c === undefined) continue
    if (!Number.isSafeInteger(c) || c < 1) return 0
    cost = c
  }
  return cost
}

// Anything unusual (a non-string key, an odd option) takes the direct native call, which
// validates it and rejects with the precise error.
Limiter.prototype.check = function check(key, options) {
  const cost = typeof key === 'string' ? plainCost(options) : 0
  const tp = cost > 0 ? plainTraceparent(options) : null
  return tp !== null ? enqueue(this, key, cost, tp) : this._check(key, options)
}

Limiter.prototype.peek = function peek(key, options) {
  const plain =
    typeof key === 'string' &&
    (options === undefined ||
      (options !== null && typeof options === 'object' && Object.keys(options).every((k) => k === 'traceparent')))
  const tp = plain ? plainTraceparent(options) : null
  return tp !== null ? enqueue(this, key, 0, tp) : this._peek(key, options)
}

module.exports = {
  Limiter,
  ManualClock: native.ManualClock,
  HttpLimiter: native.HttpLimiter,
  telemetry: require('./telemetry.js'),
}
