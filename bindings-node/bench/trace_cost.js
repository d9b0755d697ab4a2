// What tracing costs a Node caller: decisions/s and p50/p99 of Limiter.check with floodwall's
// tracing off (without, then with a traceparent passed: the binding's share); on with no exporter (the span alone); and on with spans exported over OTLP/HTTP to a
// local sink (a child process that counts and discards them). When on, every decision is sampled
// and each check passes a traceparent, as the Express middleware does.
// One private redis-server; also the embedded store. Rounds alternate off/on; the median is shown.
// Run: (cd bindings-node && npm ci && npm run build) && node bindings-node/bench/trace_cost.js
// Env: BENCH_SECONDS (per measurement, default 5), BENCH_CONCURRENCY (default 64), BENCH_ROUNDS (default 3).
'use strict'

const http = require('node:http')
const os = require('node:os')
const path = require('node:path')
const { fork } = require('node:child_process')

const PKG = path.join(__dirname, '..')
const { Limiter, telemetry } = require(PKG)
const { RedisServer, uniquePrefix, freePort } = require(path.join(PKG, 'test', 'helpers.js'))
const { closedLoop, latencies, percentile, tally } = require(path.join(PKG, '..', 'benches', 'node', 'closed_loop.js'))

const SECONDS = Number(process.env.BENCH_SECONDS || 5)
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY || 64)
const ROUNDS = Number(process.env.BENCH_ROUNDS || 3)
const KEYS = 10_000
const TRACEPARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'

// ---- the OTLP sink (a child process, so that it does not share this process's JS thread) ----

/** Spans in an ExportTraceServiceRequest (protobuf): resource_spans(1) > scope_spans(2) > spans(2). */
function countSpans(buf) {
  const fields = (b, want) => {
    const out = []
    let p = 0
    const varint = () => {
      let v = 0
      let m = 1
      for (;;) {
        const x = b[p++]
        v += (x & 0x7f) * m
        if (x < 0x80) return v
        m *= 128
      }
    }
    while (p < b.length) {
      const tag = varint()
      const wire = tag & 7
      if (wire === 0) varint()
      else if (wire === 1) p += 8
      else if (wire === 5) p += 4
      else if (wire === 2) {
        const len = varint()
        if (tag >>> 3 === want) out.push(b.subarray(p, p + len))
        p += len
      } else throw new Error(`wire type ${wire}`)
    }
    return out
  }
  let n = 0
  for (const rs of fields(buf, 1)) for (const ss of fields(rs, 2)) n += fields(ss, 2).length
  return n
}

/** The sink's process: counts the spans POSTed to it, and answers 'count' with the total. */
function runSink() {
  let spans = 0
  const server = http.createServer((req, res) => {
    const chunks = []
    req.on('data', (c) => chunks.push(c))
    req.on('end', () => {
      spans += countSpans(Buffer.concat(chunks))
      res.writeHead(200, { 'content-type': 'application/x-protobuf' })
      res.end()
    })
  })
  process.on('message', (m) => {
    if (m === 'count') process.send({ spans })
  })
  server.listen(Number(process.argv[3]), '127.0.0.1', () => process.send({ ready: true }))
}

// ---- the measurement ----

async function measure(limiter, options) {
  const op = async (key) => (await limiter.check(key, options)).source
  const { calls, elapsed } = await closedLoop(op, { seconds: SECONDS, concurrency: CONCURRENCY, keys: KEYS })
  const lat = latencies(calls)
  const n = calls.length
  return {
    perSec: n / elapsed,
    p50: n ? percentile(lat, 50) : NaN,
    p99: n ? percentile(lat, 99) : NaN,
    n,
    sources: tally(calls),
  }
}

const median = (rs) => [...rs].sort((a, b) => a.perSec - b.perSec)[Math.floor(rs.length / 2)]
const fmtN = (x) => Math.round(x).toLocaleString('en-US')
const loadAverages = () =>
  os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(' ')

async function main() {
  const sinkPort = await freePort()
  const sink = fork(__filename, ['sink', String(sinkPort)])
  await new Promise((r) => sink.once('message', r))
  const sinkCount = () =>
    new Promise((r) => {
      sink.once('message', (m) => r(m.spans))
      sink.send('count')
    })
  const redis = await RedisServer.start()
  console.log(`load average before: ${loadAverages()}`)
  console.log(`${SECONDS} s per measurement, ${CONCURRENCY} calls in flight, ${ROUNDS} rounds, median round shown`)
  try {
    // A 1 s deadline and a lenient breaker: every answer comes from Redis, also on a loaded machine.
    const onRedis = { redisUrl: redis.url, timeoutMs: 1000, breaker: { slowCallMs: 1000 } }
    for (const [store, extra] of [
      ['redis', onRedis],
      ['memory', {}],
    ]) {
      const limiter = new Limiter({ limits: '1000000/second', prefix: uniquePrefix('trace'), ...extra })
      await limiter.connect()
      await measure(limiter, undefined) // warm-up
      const off = []
      const offTp = []
      const bare = []
      const on = []
      let exported = 0
      let made = 0
      for (let r = 0; r < ROUNDS; r++) {
        telemetry.disableTracing()
        off.push(await measure(limiter, undefined))
        offTp.push(await measure(limiter, { traceparent: TRACEPARENT }))
        telemetry.configureTracing({ samplingRatio: 1 })
        bare.push(await measure(limiter, { traceparent: TRACEPARENT }))
        telemetry.disableTracing()
        const before = await sinkCount()
        telemetry.configureTracing({ otlpEndpoint: `http://127.0.0.1:${sinkPort}/v1/traces`, samplingRatio: 1 })
        const m = await measure(limiter, { traceparent: TRACEPARENT })
        telemetry.disableTracing() // flushes what the batch processor holds
        on.push(m)
        made += m.n
        exported += (await sinkCount()) - before
      }
      const a = median(off)
      const t = median(offTp)
      const c = median(bare)
      const b = median(on)
      const line = (label, x) =>
        `${label.padEnd(36)} ${fmtN(x.perSec).padStart(8)} checks/s  p50 ${x.p50.toFixed(3)} ms  p99 ${x.p99.toFixed(3)} ms  (${[...x.sources].map(([s, c]) => `${s}:${c}`).join(' ')})`
      const vs = (x) =>
        `${(x.perSec / a.perSec).toFixed(3)}x checks/s, p50 ${(((x.p50 - a.p50) / a.p50) * 100).toFixed(1)}%, p99 ${(((x.p99 - a.p99) / a.p99) * 100).toFixed(1)}%`
      console.log(line(`${store}, tracing off`, a))
      console.log(line(`${store}, off, traceparent passed`, t))
      console.log(line(`${store}, tracing on, no exporter`, c))
      console.log(line(`${store}, tracing on, OTLP export`, b))
      console.log(`${store}: against off: traceparent passed ${vs(t)}`)
      console.log(`${store}: against off: on, no exporter ${vs(c)}`)
      console.log(`${store}: against off: on, OTLP export ${vs(b)}`)
      console.log(
        `${store}: spans received by the sink: ${fmtN(exported)} of ${fmtN(made)} decisions traced with export`,
      )
    }
  } finally {
    telemetry.disableTracing()
    await redis.stop()
    sink.kill()
    console.log(`load average after: ${loadAverages()}`)
  }
}

if (process.argv[2] === 'sink') {
  runSink()
} else {
  main().catch((e) => {
    console.error(e)
    process.exit(1)
  })
}
