// Node side-by-side benchmark, all against ONE private redis-server this script starts:
//   1. decisions/s and latency p50/p99 of floodwall's Limiter vs rate-limiter-flexible
//      (RateLimiterRedis over ioredis), closed loop with a fixed number of calls in flight;
//   2. HTTP requests/s of an Express app with floodwall/express vs express-rate-limit +
//      rate-limit-redis (and no limiter, for reference), driven by autocannon.
// floodwall is measured twice: exact (every decision a Redis script call) and with the core's local
// cache layer (`cache: true`: denial cache, coalescing, leases), which trades up to its drift budget
// (1% of a limit) of accuracy for fewer Redis calls.
// Run: (cd bindings-node && npm ci && npm run build) && node benches/node/bench.js
// Env: BENCH_SECONDS (per measurement, default 5), BENCH_CONCURRENCY (default 64), BENCH_ROUNDS (default 3),
//      BENCH_KEYS (identities, default 10000), BENCH_HTTP (0: skip the HTTP part), BENCH_HTTP_CONNECTIONS (default 50).
'use strict'

const path = require('node:path')
const os = require('node:os')
const { fork } = require('node:child_process')
const { createRequire } = require('node:module')

const { closedLoop, latencies, percentile, tally } = require('./closed_loop.js')

const PKG = path.join(__dirname, '..', '..', 'bindings-node')
const requireDev = createRequire(path.join(PKG, 'package.json'))
const { Limiter } = require(PKG)
const { RedisServer } = require(path.join(PKG, 'test', 'helpers.js'))
const Redis = requireDev('ioredis')
const { RateLimiterRedis } = requireDev('rate-limiter-flexible')
const autocannon = requireDev('autocannon')

const SECONDS = Number(process.env.BENCH_SECONDS || 5)
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY || 64)
const ROUNDS = Number(process.env.BENCH_ROUNDS || 3)
const CONNECTIONS = Number(process.env.BENCH_HTTP_CONNECTIONS || 50)
const KEYS = Number(process.env.BENCH_KEYS || 10_000)
const HTTP = process.env.BENCH_HTTP !== '0'

/** Redis's CPU seconds so far (user + sys), from INFO cpu. */
async function redisCpu(redis) {
  const info = await redis.command('INFO', 'cpu')
  const get = (k) => Number(info.match(new RegExp(`${k}:([0-9.]+)`))[1])
  return get('used_cpu_user') + get('used_cpu_sys')
}

/**
 * Closed loop: CONCURRENCY workers each await `op(key)` back to back for SECONDS. Also the CPU
 * each decision cost in this process (all threads) and in redis-server.
 */
async function measure(op, redis) {
  const r0 = await redisCpu(redis)
  const c0 = process.cpuUsage()
  const { calls, elapsed } = await closedLoop(op, { seconds: SECONDS, concurrency: CONCURRENCY, keys: KEYS })
  const c = process.cpuUsage(c0)
  const redisUs = ((await redisCpu(redis)) - r0) * 1e6
  const n = calls.length
  const lat = latencies(calls)
  const outcomes = tally(calls)
  return {
    perSec: n / elapsed,
    p50: percentile(lat, 50),
    p99: percentile(lat, 99),
    nodeUs: (c.user + c.system) / n,
    redisUs: redisUs / n,
    outcomes,
  }
}

const load = () =>
  os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(' ')

function fmt(r) {
  const outcomes = [...r.outcomes].map(([k, v]) => `${k}:${v}`).join(' ')
  const cpu = `cpu/decision: node ${r.nodeUs.toFixed(1)} us, redis ${r.redisUs.toFixed(1)} us`
  return `${Math.round(r.perSec).toLocaleString('en-US').padStart(9)} decisions/s  p50 ${r.p50.toFixed(3)} ms  p99 ${r.p99.toFixed(3)} ms  ${cpu}  (${outcomes})`
}

const cacheLines = []

async function decisions(redis) {
  const ioredis = new Redis(redis.port, '127.0.0.1', { enableOfflineQueue: true, lazyConnect: false })
  await ioredis.ping()
  // Limits far above the load, so both libraries take the "allowed" path on every call. Like for
  // like with ioredis, which has no deadline: a 1 s deadline and breaker threshold, so that every
  // floodwall decision comes from Redis (the default 20 ms deadline hands slow calls to the
  // fallback; the source counts printed with each line show where answers came from).
  const onRedis = { redisUrl: redis.url, timeoutMs: 1000, breaker: { slowCallMs: 1000 } }
  const fw1 = new Limiter({ limits: '100000000/minute', prefix: 'bench-fw1', ...onRedis })
  const fw2 = new Limiter({ limits: ['10000000/second', '100000000/minute'], prefix: 'bench-fw2', ...onRedis })
  const fwc1 = new Limiter({ limits: '100000000/minute', prefix: 'bench-fwc1', cache: true, ...onRedis })
  const fwc2 = new Limiter({
    limits: ['10000000/second', '100000000/minute'],
    prefix: 'bench-fwc2',
    cache: true,
    ...onRedis,
  })
  for (const l of [fw1, fw2, fwc1, fwc2]) await l.connect()
  const rlfMinute = new RateLimiterRedis({
    storeClient: ioredis,
    keyPrefix: 'bench-rlf1',
    points: 100_000_000,
    duration: 60,
  })
  const rlfSecond = new RateLimiterRedis({
    storeClient: ioredis,
    keyPrefix: 'bench-rlf2',
    points: 10_000_000,
    duration: 1,
  })
  const variants = [
    [
      'floodwall, 1 limit (sliding window)',
      async (k) => {
        const d = await fw1.check(k)
        return `${d.allowed ? 'allowed' : 'denied'}/${d.source}`
      },
    ],
    [
      'floodwall with cache, 1 limit',
      async (k) => {
        const d = await fwc1.check(k)
        return `${d.allowed ? 'allowed' : 'denied'}/${d.source}`
      },
    ],
    [
      'rate-limiter-flexible, 1 limit (fixed window)',
      async (k) => {
        try {
          await rlfMinute.consume(k)
          return 'allowed'
        } catch (e) {
          if (e instanceof Error) throw e
          return 'denied'
        }
      },
    ],
    [
      'floodwall, 2 limits in one call',
      async (k) => {
        const d = await fw2.check(k)
        return `${d.allowed ? 'allowed' : 'denied'}/${d.source}`
      },
    ],
    [
      'floodwall with cache, 2 limits',
      async (k) => {
        const d = await fwc2.check(k)
        return `${d.allowed ? 'allowed' : 'denied'}/${d.source}`
      },
    ],
    [
      'rate-limiter-flexible, 2 limiters',
      async (k) => {
        try {
          await Promise.all([rlfSecond.consume(k), rlfMinute.consume(k)])
          return 'allowed'
        } catch (e) {
          if (e instanceof Error) throw e
          return 'denied'
        }
      },
    ],
  ]
  // Warm up each (connections, script cache, JIT), then alternate rounds so drift hits all alike.
  for (const [, op] of variants) {
    for (let i = 0; i < 2000; i++) await op(`warm${i % 100}`)
  }
  const results = new Map(variants.map(([name]) => [name, []]))
  for (let round = 1; round <= ROUNDS; round++) {
    for (const [name, op] of variants) {
      const r = await measure(op, redis)
      results.get(name).push(r)
      console.log(`round ${round}  ${name.padEnd(46)} ${fmt(r)}  load ${load()}`)
    }
  }
  for (const [name, l] of [
    ['1 limit', fwc1],
    ['2 limits', fwc2],
  ]) {
    const c = l.cacheStats()
    cacheLines.push(
      `cache, ${name}: ${c.entries} entries, ${c.leasesGranted} leases, ${c.permitsLeased} permits leased, ${c.permitsReturned} given back`,
    )
  }
  await ioredis.quit()
  // Report the median round of each variant by decisions/s.
  const median = (rs) => [...rs].sort((a, b) => a.perSec - b.perSec)[Math.floor(rs.length / 2)]
  return new Map([...results].map(([name, rs]) => [name, median(rs)]))
}

function startServer(variant, redisUrl) {
  return new Promise((resolve, reject) => {
    const child = fork(path.join(__dirname, 'http_server.js'), [variant, redisUrl], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    })
    child.once('message', (m) => resolve({ child, port: m.port }))
    child.once('exit', (code) => reject(new Error(`${variant} server exited with ${code}`)))
  })
}

async function http(redis) {
  const out = new Map()
  for (const variant of ['none', 'floodwall', 'express-rate-limit']) {
    const { child, port } = await startServer(variant, redis.url)
    const url = `http://127.0.0.1:${port}/`
    await autocannon({ url, connections: CONNECTIONS, duration: 1 }) // warm-up
    const r = await autocannon({ url, connections: CONNECTIONS, duration: SECONDS * 2 })
    const codes = Object.entries(r.statusCodeStats || {})
      .map(([c, s]) => `${c}:${s.count}`)
      .join(' ')
    const line = `${Math.round(r.requests.average).toLocaleString('en-US').padStart(8)} req/s  latency p50 ${r.latency.p50} ms  p99 ${r.latency.p99} ms  (${codes}; errors ${r.errors}, timeouts ${r.timeouts})`
    console.log(`http  ${variant.padEnd(20)} ${line}`)
    out.set(variant, line)
    child.kill()
    await new Promise((res) => child.once('exit', res))
  }
  return out
}

async function main() {
  const redis = await RedisServer.start()
  try {
    console.log(`# load average before: ${load()}`)
    console.log(
      `# node ${process.version}, ${os.cpus().length} cores (${os.cpus()[0].model}), redis-server on ${redis.url}`,
    )
    console.log(
      `# ${SECONDS} s per measurement, ${CONCURRENCY} calls in flight, ${KEYS} keys, median of ${ROUNDS} rounds`,
    )
    const d = await decisions(redis)
    const h = HTTP ? await http(redis) : new Map()
    console.log('\n## decisions (median round)')
    for (const [name, r] of d) console.log(`${name.padEnd(46)} ${fmt(r)}`)
    for (const [name, r] of d) {
      // exact rows must be all Redis; cached rows may also say cache or lease, never fallback
      const ok = name.includes('with cache') ? ['/redis', '/cache', '/lease'] : ['/redis']
      const other = [...r.outcomes.keys()].filter((k) => k.includes('/') && !ok.some((s) => k.endsWith(s)))
      if (other.length)
        console.log(`WARNING: ${name} had answers from elsewhere (${other.join(', ')}); its numbers do not compare`)
    }
    const ratio = (a, b, label) => {
      const x = d.get(a)
      const y = d.get(b)
      console.log(
        `${label}: ${(x.perSec / y.perSec).toFixed(2)}x decisions/s, p99 ${x.p99.toFixed(3)} vs ${y.p99.toFixed(3)} ms`,
      )
    }
    ratio(
      'floodwall, 1 limit (sliding window)',
      'rate-limiter-flexible, 1 limit (fixed window)',
      'floodwall / rate-limiter-flexible, 1 limit',
    )
    ratio(
      'floodwall with cache, 1 limit',
      'rate-limiter-flexible, 1 limit (fixed window)',
      'floodwall with cache / rate-limiter-flexible, 1 limit',
    )
    ratio(
      'floodwall, 2 limits in one call',
      'rate-limiter-flexible, 2 limiters',
      'floodwall / rate-limiter-flexible, 2 limits',
    )
    ratio(
      'floodwall with cache, 2 limits',
      'rate-limiter-flexible, 2 limiters',
      'floodwall with cache / rate-limiter-flexible, 2 limits',
    )
    for (const line of cacheLines) console.log(line)
    console.log(`# load average after: ${load()}`)
    if (HTTP) {
      console.log(`\n## HTTP (autocannon, ${CONNECTIONS} connections, ${SECONDS * 2} s)`)
      for (const [name, line] of h) console.log(`${name.padEnd(20)} ${line}`)
    }
  } finally {
    await redis.stop()
  }
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
