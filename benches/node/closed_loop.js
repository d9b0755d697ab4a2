// The closed loop every Node benchmark drives (bench.js, ab_cpu.js, diagnose.js,
// bindings-node/bench/trace_cost.js): `concurrency` workers each await `op(key)` back to back for
// `seconds`, keys spread over `keys`. Calls are recorded in typed arrays, not an object per call:
// a million retained [start, end, outcome] arrays made the GC's pauses grow with the rate measured,
// so the faster library paid more for being measured (a longer p99 tail) than the slower one.
'use strict'

/** Value at percentile `p` of an ascending array. */
const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]

/** Every call of one loop: start and end times (ms) by completion, and how many returned each value. */
class Calls {
  constructor() {
    this.length = 0
    this.starts = new Float64Array(1 << 16)
    this.ends = new Float64Array(1 << 16)
    /** @type {Map<unknown, number>} */
    this.outcomes = new Map()
  }

  add(start, end, out) {
    if (this.length === this.starts.length) {
      const grow = (a) => {
        const b = new Float64Array(2 * a.length)
        b.set(a)
        return b
      }
      this.starts = grow(this.starts)
      this.ends = grow(this.ends)
    }
    this.starts[this.length] = start
    this.ends[this.length] = end
    this.length++
    this.outcomes.set(out, (this.outcomes.get(out) || 0) + 1)
  }
}

/** Runs the loop; returns its Calls and the wall time in seconds. */
async function closedLoop(op, { seconds, concurrency, keys }) {
  const calls = new Calls()
  const end = performance.now() + seconds * 1000
  async function worker(w) {
    let i = w
    while (performance.now() < end) {
      const key = `k${(i * 7919) % keys}`
      i += concurrency
      const t0 = performance.now()
      const out = await op(key)
      calls.add(t0, performance.now(), out)
    }
  }
  const t0 = performance.now()
  await Promise.all(Array.from({ length: concurrency }, (_, w) => worker(w)))
  return { calls, elapsed: (performance.now() - t0) / 1000 }
}

/** Latencies (ms) of `calls`, ascending. */
function latencies(calls) {
  const out = new Float64Array(calls.length)
  for (let i = 0; i < calls.length; i++) out[i] = calls.ends[i] - calls.starts[i]
  return out.sort()
}

/** How many calls returned each value. */
const tally = (calls) => calls.outcomes

module.exports = { closedLoop, latencies, percentile, tally }
