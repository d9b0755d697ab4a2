// Compiled (never run) by types.test.js: the .d.ts files describe what users write.

import express from 'express'
import {
  type CacheStats,
  type Decision,
  type FloodwallError,
  HttpLimiter,
  Limiter,
  ManualClock,
  telemetry,
} from 'floodwall'
import { rateLimit } from 'floodwall/express'
import { Registry } from 'prom-client'

async function main(): Promise<void> {
  const limiter = new Limiter({
    limits: ['5/second', '100/minute'],
    algorithm: 'sliding_window',
    redisUrl: 'redis://127.0.0.1:6379',
  })
  const d: Decision = await limiter.check('user:42', { cost: 1 })
  const fields: [boolean, number, number, number, number | null, string | null, string] = [
    d.allowed,
    d.limit,
    d.remaining,
    d.resetAfter,
    d.retryAfter,
    d.limitedBy,
    d.source,
  ]
  const w: number | null = d.windows[0].retryAfter
  await limiter.peek('k')
  await limiter.check('k', { cost: 2, traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' })
  await limiter.peek('k', { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' })
  await limiter.reset('k')
  const clock = new ManualClock(0)
  clock.advance(10)
  new Limiter({ limits: '1/second', clock })
  new Limiter({
    limits: '1/second',
    redisUrl: 'redis://x',
    fallback: { mode: 'local', expectedInstances: 3 },
    breaker: { slowCallMs: 50, maxInFlight: 64 },
  })
  new Limiter({ name: 'api', limits: '1/second' })
  const cached = new Limiter({
    limits: '1/second',
    redisUrl: 'redis://x',
    cache: { leaseMs: 200, driftRatio: 0.01, denialCache: true },
  })
  new Limiter({ limits: '1/second', redisUrl: 'redis://x', cache: true })
  const stats: CacheStats | null = cached.cacheStats()
  const leased: number | undefined = stats?.permitsLeased
  void leased
  try {
    new Limiter({ limits: 'x' })
  } catch (e) {
    const code: string = (e as FloodwallError).code
    void code
  }
  const app = express()
  app.use(
    rateLimit({
      limits: '100/minute',
      key: 'user+endpoint+ip',
      trustedProxies: ['10.0.0.0/8'],
      jwt: { secret: 'a-secret-of-at-least-32-bytes-long', requireExp: true },
      apiKeys: { allow: ['k'], verify: async (k: string) => (k === 'k' ? 'acct' : null), keySecret: Buffer.alloc(32) },
      headers: 'both',
    }),
  )
  app.get('/x', rateLimit({ limiter, key: (req) => String(req.ip) }), (_req, res) => res.end())
  app.use(rateLimit({ rules: [{ name: 'login', path: '/login', methods: ['POST'], limits: '5/minute', cache: true }] }))
  app.use(rateLimit({ limits: '100/minute', redisUrl: 'redis://x', cache: { leases: false } }))
  app.use(
    rateLimit({
      limits: '100/minute',
      shadow: false,
      logger: { warn: console.warn, info: console.info },
      rules: [{ name: 'search-trial', path: '/search', limits: '2/second', shadow: true }],
    }),
  )
  const h = new HttpLimiter({ limits: '1/second' })
  const hd = await h.decide('GET', '/', undefined, '127.0.0.1')
  const status: 200 | 429 = hd.status
  const wouldDeny: string[] = hd.shadowDenied
  void wouldDeny
  telemetry.configureTracing({
    otlpEndpoint: 'http://localhost:4318/v1/traces',
    samplingRatio: 0.1,
    recordRawKeys: false,
    serviceName: 'api',
  })
  telemetry.disableTracing()
  telemetry.installJsonLogs('floodwall=warn')
  const text: string = telemetry.prometheusText()
  const registry: Registry = telemetry.registerMetrics(new Registry())
  const scraped: string = await registry.metrics()
  void [fields, w, status, text, scraped]
}
void main
