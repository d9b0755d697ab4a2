// Compiled (never run) by types.test.js: the .d.ts files describe what users write.
import { Limiter, ManualClock, HttpLimiter, type Decision, type FloodwallError } from 'floodwall'
import { rateLimit } from 'floodwall/express'
import express from 'express'

async function main(): Promise<void> {
  const limiter = new Limiter({ limits: ['5/second', '100/minute'], algorithm: 'sliding_window', redisUrl: 'redis://127.0.0.1:6379' })
  const d: Decision = await limiter.check('user:42', { cost: 1 })
  const fields: [boolean, number, number, number, number | null, string | null, string] = [
    d.allowed, d.limit, d.remaining, d.resetAfter, d.retryAfter, d.limitedBy, d.source,
  ]
  const w: number | null = d.windows[0].retryAfter
  await limiter.peek('k')
  await limiter.reset('k')
  const clock = new ManualClock(0)
  clock.advance(10)
  new Limiter({ limits: '1/second', clock })
  new Limiter({ limits: '1/second', redisUrl: 'redis://x', fallback: { mode: 'local', expectedInstances: 3 }, breaker: { slowCallMs: 50 } })
  try {
    new Limiter({ limits: 'x' })
  } catch (e) {
    const code: string = (e as FloodwallError).code
    void code
  }
  const app = express()
  app.use(rateLimit({ limits: '100/minute', key: 'user+endpoint+ip', trustedProxies: ['10.0.0.0/8'], jwt: { secret: 's' }, headers: 'both' }))
  app.get('/x', rateLimit({ limiter, key: (req) => String(req.ip) }), (req, res) => res.end())
  app.use(rateLimit({ rules: [{ name: 'login', path: '/login', methods: ['POST'], limits: '5/minute' }] }))
  const h = new HttpLimiter({ limits: '1/second' })
  const hd = await h.decide('GET', '/', undefined, '127.0.0.1')
  const status: 200 | 429 = hd.status
  void [fields, w, status]
}
void main
