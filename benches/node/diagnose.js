// Where an exact floodwall decision's time goes from Node, next to rate-limiter-flexible's, on one
// private redis-server: per decision, each thread's CPU and run-queue wait (Linux schedstat: the
// JS thread, the addon's tokio thread, redis-server), Redis reads and commands (INFO stats), and
// the stalls behind the p99 (gaps in which no call completed). Also what one crossing into the
// addon costs: a PING through the addon against ioredis's, and check without the JS batching.
// Run: (cd bindings-node && npm ci && npm run build) && node benches/node/diagnose.js   (Linux only)
// Env: BENCH_SECONDS (default 3), BENCH_CONCURRENCY (64), BENCH_ROUNDS (3), BENCH_KEYS (10000).
'use strict'

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { createRequire } = require('node:module')

const { closedLoop, latencies, percentile } = require('./closed_loop.js')

const PKG = path.join(__dirname, '..', '..', 'bindings-node')
const requireDev = createRequire(path.join(PKG, 'package.json'))
const { Limiter } = require(PKG)
const { RedisServer } = require(path.join(PKG, 'test', 'helpers.js'))
const Redis = requireDev('ioredis')
const { RateLimiterRedis } = requireDev('rate-limiter-flexible')

const SECONDS = Number(process.env.BENCH_SECONDS || 3)
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY || 64)
const ROUNDS = Number(process.env.BENCH_ROUNDS || 3)
const KEYS = Number(process.env.BENCH_KEYS || 10_000)
const STALL_MS = 2

const load = () =>
  os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(' ')

/** Per thread name: [run ns, run-queue wait ns], summed over the threads of `pid`. */
function schedstat(pid) {
  const out = new Map()
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      const name = fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim()
      const [run, wait] = fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ').map(Number)
      const t = out.get(name) || [0, 0]
      out.set(name, [t[0] + run, t[1] + wait])
    } catch {
      // the thread ended between listing and reading
    }
  }
  return out
}

async function redisStats(client) {
  const text = await client.info()
  const get = (k) => Number((text.match(new RegExp(`\\r\\n${k}:([0-9.]+)`)) || [0, 0])[1])
  return { reads: get('total_reads_processed'), commands: get('total_commands_processed') }
}

async function measure(op, redisPid, stats) {
  const s0 = schedstat(process.pid)
  const r0 = schedstat(redisPid)
  const i0 = await redisStats(stats)
  const { calls, elapsed } = await closedLoop(op, { seconds: SECONDS, concurrency: CONCURRENCY, keys: KEYS })
  const i1 = await redisStats(stats)
  const s1 = schedstat(process.pid)
  const r1 = schedstat(redisPid)
  const n = calls.length
  const lat = latencies(calls)
  const p99 = percentile(lat, 99)
  const done = calls.ends.slice(0, n).sort()
  const gaps = []
  for (let i = 1; i < done.length; i++) if (done[i] - done[i - 1] > STALL_MS) gaps.push([done[i - 1], done[i]])
  const tail = []
  for (let i = 0; i < n; i++) if (calls.ends[i] - calls.starts[i] >= p99) tail.push([calls.starts[i], calls.ends[i]])
  const inGap = tail.filter(([a, b]) => gaps.some(([g0, g1]) => g0 >= a && g1 <= b)).length
  const per = (after, before, name) => {
    const x = after.get(name)
    const y = before.get(name) || [0, 0]
    return x ? `${((x[0] - y[0]) / n / 1000).toFixed(1)}/${((x[1] - y[1]) / n / 1000).toFixed(1)}` : '-'
  }
  const redisName = [...r1.keys()][0]
  return [
    `${Math.round(n / elapsed)
      .toLocaleString('en-US')
      .padStart(7)}/s p50 ${percentile(lat, 50).toFixed(2)} p99 ${p99.toFixed(2)} ms`,
    `run/wait us: js ${per(s1, s0, 'node')} tokio ${per(s1, s0, 'floodwall-node')} redis ${per(r1, r0, redisName)}`,
    `redis reads ${((i1.reads - i0.reads) / n).toFixed(2)} cmds ${((i1.commands - i0.commands) / n).toFixed(2)}`,
    `stalls >${STALL_MS}ms ${(gaps.length / elapsed).toFixed(0)}/s ${((100 * gaps.reduce((s, [a, b]) => s + b - a, 0)) / (elapsed * 1000)).toFixed(0)}% of time, p99 calls in one ${((100 * inGap) / Math.max(1, tail.length)).toFixed(0)}%`,
  ].join(' | ')
}

async function main() {
  const redis = await RedisServer.start()
  const ioredis = new Redis(redis.port, '127.0.0.1')
  const stats = new Redis(redis.port, '127.0.0.1') // INFO on its own connection
  try {
    await ioredis.ping()
    console.log(`# load average before: ${load()}`)
    console.log(
      `# node ${process.version}, ${os.cpus().length} cores, ${SECONDS} s x ${ROUNDS} rounds, ${CONCURRENCY} in flight, ${KEYS} keys`,
    )
    console.log('# run/wait: CPU time and run-queue wait per decision of the JS thread, the tokio thread, redis-server')
    const fw = new Limiter({
      limits: '100000000/minute',
      prefix: 'diag-fw',
      redisUrl: redis.url,
      timeoutMs: 1000,
      breaker: { slowCallMs: 1000 },
    })
    await fw.connect()
    const rlf = new RateLimiterRedis({ storeClient: ioredis, keyPrefix: 'diag-rlf', points: 100_000_000, duration: 60 })
    const variants = [
      ['floodwall check', (k) => fw.check(k)],
      ['rate-limiter-flexible', (k) => rlf.consume(k)],
      ['floodwall check, unbatched', (k) => fw._check(k)],
      ['floodwall PING (addon)', () => fw.connect()],
      ['ioredis PING', () => ioredis.ping()],
    ]
    for (const [, op] of variants) for (let i = 0; i < 2000; i++) await op(`warm${i % 100}`)
    for (let round = 1; round <= ROUNDS; round++) {
      for (const [name, op] of variants) {
        console.log(`round ${round}  ${name.padEnd(27)} ${await measure(op, redis.child.pid, stats)}  load ${load()}`)
      }
    }
    console.log(`# load average after: ${load()}`)
  } finally {
    await ioredis.quit()
    await stats.quit()
    await redis.stop()
  }
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
