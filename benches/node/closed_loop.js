// The closed loop every Node benchmark drives (bench.js, diagnose.js, bindings-node/bench/trace_cost.js):
// `concurrency` workers each await `op(key)` back to back for `seconds`, keys spread over `keys`.
'use strict'

/** Value at percentile `p` of an ascending array. */
const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]

/**
 * Runs the loop; returns every call as [start ms, end ms, what op returned] in completion order,
 * and the wall time in seconds.
 */
async function closedLoop(op, { seconds, concurrency, keys }) {
  const calls = []
  const end = performance.now() + seconds * 1000
  async function worker(w) {
    let i = w
    while (performance.now() < end) {
      const key = `k${(i * 7919) % keys}`
      i += concurrency
      const t0 = performance.now()
      const out = await op(key)
      calls.push([t0, performance.now(), out])
    }
  }
  const t0 = performance.now()
  await Promise.all(Array.from({ length: concurrency }, (_, w) => worker(w)))
  return { calls, elapsed: (performance.now() - t0) / 1000 }
}

/** Latencies (ms) of `calls`, ascending. */
const latencies = (calls) => calls.map(([a, b]) => b - a).sort((a, b) => a - b)

/** How many calls returned each value. */
function tally(calls) {
  const out = new Map()
  for (const [, , v] of calls) out.set(v, (out.get(v) || 0) + 1)
  return out
}

module.exports = { closedLoop, latencies, percentile, tally }
