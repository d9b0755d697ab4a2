// An Express app limited by floodwall: an app-wide limit per user (verified JWT, else client IP),
// a stricter rule on POST /login, and a per-route limit keyed by user and endpoint. Runs on the
// embedded store, or on Redis when FLOODWALL_REDIS_URL is set.
//
//   (cd bindings-node && npm ci && npx napi build --platform --release)
//   node examples/express_app.js            # or FLOODWALL_REDIS_URL=redis://127.0.0.1:6379 node ...
'use strict'

const path = require('node:path')

// From an installed package, or straight from this repository.
function load(name, fromRepo) {
  try {
    return require(name)
  } catch {
    return require(path.join(__dirname, '..', 'bindings-node', fromRepo))
  }
}
const express = load('express', 'node_modules/express')
const { rateLimit } = load('floodwall/express', 'express.js')

const redisUrl = process.env.FLOODWALL_REDIS_URL || undefined
const port = Number(process.env.PORT || 3000)

const app = express()

app.use(
  rateLimit({
    name: 'site',
    limits: ['10/second', '100/minute'],
    key: 'user', // the `sub` of a JWT whose signature verifies, else the client IP
    jwt: { secret: process.env.JWT_SECRET || 'dev-secret-change-me' },
    // Only these peers may tell us the client's address in X-Forwarded-For.
    trustedProxies: (process.env.TRUSTED_PROXIES || '').split(',').filter(Boolean),
    headers: 'both',
    redisUrl,
    rules: [{ name: 'login', path: '/login', methods: ['POST'], limits: '3/minute', key: 'ip' }],
  }),
)

app.get('/', (req, res) => res.json({ hello: 'world', key: req.rateLimit.key, remaining: req.rateLimit.remaining }))
app.post('/login', (req, res) => res.json({ ok: true }))
app.get(
  '/items/:id',
  rateLimit({ name: 'items', limits: '5/10s', key: 'user+endpoint', jwt: { secret: process.env.JWT_SECRET || 'dev-secret-change-me' }, redisUrl }),
  (req, res) => res.json({ id: req.params.id }),
)

app.listen(port, '127.0.0.1', () => {
  console.log(`floodwall example on http://127.0.0.1:${port} (store: ${redisUrl ? redisUrl : 'embedded'})`)
})
