// CPU per decision of two or more builds of the Node package, compared in ONE process on one private
// redis-server: each build is loaded from its own directory (its own addon and tokio runtime), and
// short closed-loop rounds alternate between them (order reversed every other round), so a busy or
// stolen CPU hits every build alike. Reports per build the median round: decisions/s, p99, and the
// Node process's CPU per decision, split into the JS thread(s) and the addon's tokio thread.
// Run: BENCH_PKGS=base=/path/to/old/bindings-node,new=bindings-node node benches/node/ab_cpu.js   (Linux)
// Env: BENCH_PKGS (name=dir,...; default: this checkout's package alone), BENCH_SECONDS (per round,
//      default 2), BENCH_ROUNDS (default 8), BENCH_LIMITS (1 or 2, default 1), BENCH_CONCURRENCY (64),
//      BENCH_KEYS (10000).
'use strict'

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const { closedLoop, latencies, percentile } = require('./closed_loop.js')

const HERE = path.join(__dirname, '..', '..', 'bindings-node')
const { RedisServer } = require(path.join(HERE, 'test', 'helpers.js'))

const PKGS = (process.env.BENCH_PKGS || `this=${HERE}`).split(',').map((s) => {
  const [name, dir] = s.split('=')
  return [name, path.resolve(dir)]
})
const SECONDS = Number(process.env.BENCH_SECONDS || 2)
const ROUNDS = Number(process.env.BENCH_ROUNDS || 8)
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY || 64)
const KEYS = Number(process.env.BENCH_KEYS || 10_000)
const LIMITS = process.env.BENCH_LIMITS === '2' ? ['10000000/second', '100000000/minute'] : ['100000000/minute']

const load = () =>
  os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(' ')

/** CPU ns so far per thread name of this process (the addon's runtime threads are "floodwall-node"). */
function threadCpu() {
  const out = new Map()
  for (const tid of fs.readdirSync(`/proc/${process.pid}/task`)) {
    try {
      const name = fs.readFileSync(`/proc/${process.pid}/task/${tid}/comm`, 'utf8').trim()
      const run = Number(fs.readFileSync(`/proc/${process.pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0])
      out.set(name, (out.get(name) || 0) + run)
    } catch {
      // the thread ended between listing and reading
    }
  }
  return out
}

async function main() {
  const redis = await RedisServer.start()
  try {
    const builds = []
    for (const [name, dir] of PKGS) {
      const { Limiter } = require(dir)
      // every answer from Redis, as in bench.js
      const fw = new Limiter({
        limits: LIMITS,
        prefix: `ab-${name}`,
        redisUrl: redis.url,
        timeoutMs: 1000,
        breaker: { slowCallMs: 1000 },
      })
      await fw.connect()
      const op = async (k) => (await fw.check(k)).source
      for (let i = 0; i < 3000; i++) await op(`warm${i % 100}`)
      builds.push({ name, op, rounds: [] })
    }
    console.log(`# load average before: ${load()}`)
    console.log(
      `# node ${process.version}, ${os.cpus().length} cores; limits ${LIMITS.join(', ')}; ${SECONDS} s x ${ROUNDS} rounds, ${CONCURRENCY} in flight, ${KEYS} keys`,
    )
    for (let r = 0; r < ROUNDS; r++) {
      for (const b of r % 2 ? [...builds].reverse() : builds) {
        const t0 = threadCpu()
        const c0 = process.cpuUsage()
        const { calls, elapsed } = await closedLoop(b.op, { seconds: SECONDS, concurrency: CONCURRENCY, keys: KEYS })
        const c = process.cpuUsage(c0)
        const t1 = threadCpu()
        const n = calls.length
        const per = (thread) => ((t1.get(thread) || 0) - (t0.get(thread) || 0)) / 1000 / n
        const other = calls.length - (calls.outcomes.get('redis') || 0)
        b.rounds.push({
          rate: n / elapsed,
          p99: percentile(latencies(calls), 99),
          node: (c.user + c.system) / n,
          js: per('node'),
          tokio: per('floodwall-node'),
          other,
        })
      }
    }
    const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
    for (const b of builds) {
      const m = (k, digits) => median(b.rounds.map((x) => x[k])).toFixed(digits)
      const each = b.rounds.map((x) => x.node.toFixed(1)).join(' ')
      const other = b.rounds.reduce((s, x) => s + x.other, 0)
      console.log(
        `${b.name.padEnd(8)} ${Math.round(m('rate', 0)).toLocaleString('en-US').padStart(8)} decisions/s  p99 ${m('p99', 3)} ms  ` +
          `node cpu/decision ${m('node', 2)} us (JS threads ${m('js', 2)}, tokio ${m('tokio', 2)})  every round: ${each}` +
          (other ? `  WARNING: ${other} answers not from Redis` : ''),
      )
    }
    console.log(`# load average after: ${load()}`)
  } finally {
    await redis.stop()
  }
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
