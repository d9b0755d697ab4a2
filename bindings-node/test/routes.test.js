// floodwall/express endpoint keys and client IPs against real Express 4 and 5 servers: spellings of
// one route share its bucket, HEAD spends GET's, network aggregates, RFC 7239 Forwarded, and a
// proxy on a unix socket.
'use strict'

const { test, describe } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const http = require('node:http')
const os = require('node:os')
const path = require('node:path')
const { HttpLimiter } = require('..')
const { rateLimit } = require('../express')
const { listen } = require('./helpers')

const flavours = [
  ['express 4', require('express4')],
  ['express 5', require('express')],
]

/** An app with `middleware` in front and a handler that counts its runs and echoes the key. */
async function serve(express, middleware, routes = ['/login', '/items/:id', '/x']) {
  const app = express()
  const runs = { n: 0 }
  app.use(middleware)
  for (const r of routes) {
    app.all(r, (req, res) => {
      runs.n += 1
      res.json({ key: req.rateLimit?.key ?? null, rules: req.rateLimit?.rules ?? [] })
    })
  }
  const s = await listen(app)
  return { call: (p, init = {}) => fetch(s.base + p, init), close: s.close, runs }
}

for (const [flavour, express] of flavours) {
  describe(flavour, () => {
    test('ten spellings of /login share one bucket: the handler runs twice at 2/minute', async () => {
      const s = await serve(express, rateLimit({ limits: '2/minute', key: 'endpoint+ip' }))
      try {
        const spellings = [
          '/login',
          '/LOGIN',
          '/login/',
          '/Login',
          '/LOGIN/',
          '/lOgIn',
          '/login?next=/',
          '/Login/?a=b',
          '/LoGiN',
          '/loGIN/',
        ]
        const statuses = []
        for (const p of spellings) statuses.push((await s.call(p, { method: 'POST' })).status)
        assert.equal(s.runs.n, 2, statuses.join(' '))
        assert.deepEqual(statuses.slice(2), Array(8).fill(429))
      } finally {
        await s.close()
      }
    })

    test('a rule keyed by endpoint names its pattern, whatever the spelling', async () => {
      const limiter = rateLimit({
        rules: [{ name: 'login', path: '/login', limits: '2/minute', key: 'endpoint+ip' }],
      })
      const s = await serve(express, limiter, ['/login', '/LOGIN', '//login'])
      try {
        for (const p of ['/LOGIN', '/login/', '//login', '/login']) await s.call(p, { method: 'POST' })
        assert.equal(s.runs.n, 2)
      } finally {
        await s.close()
      }
    })

    test('/items/2 ... /items/41 are one route, one bucket', async () => {
      const s = await serve(express, rateLimit({ limits: '2/minute', key: 'endpoint+ip' }))
      try {
        const keys = new Set()
        let ok = 0
        for (let i = 2; i <= 41; i++) {
          const r = await s.call(`/items/${i}`)
          if (r.status === 200) {
            ok += 1
            keys.add((await r.json()).key)
          }
        }
        assert.equal(ok, 2)
        assert.deepEqual([...keys], ['ep:GET /items/:id|ip:127.0.0.1'])
      } finally {
        await s.close()
      }
    })

    test('a router mounted on a prefix: its routes are one bucket each, whatever the spelling', async () => {
      const app = express()
      app.use(rateLimit({ limits: '2/minute', key: 'endpoint+ip' }))
      const api = express.Router()
      api.get('/items/:id', (req, res) => res.json({ key: req.rateLimit?.key ?? null }))
      app.use('/api', api)
      const s = await listen(app)
      try {
        const keys = new Set()
        let ok = 0
        for (const p of [
          '/api/items/1',
          '/API/items/2',
          '/api//items/3',
          ...Array.from({ length: 7 }, (_, i) => `/api/items/${i + 4}`),
        ]) {
          const r = await fetch(s.base + p)
          if (r.status === 200) {
            ok += 1
            keys.add((await r.json()).key)
          }
        }
        assert.equal(ok, 2)
        assert.deepEqual([...keys], ['ep:GET /api/items/:id|ip:127.0.0.1'])
      } finally {
        await s.close()
      }
    })

    test('HEAD spends the GET bucket', async () => {
      const s = await serve(express, rateLimit({ limits: '2/minute', key: 'endpoint+ip' }))
      try {
        assert.equal((await s.call('/x')).status, 200)
        assert.equal((await s.call('/x', { method: 'HEAD' })).status, 200)
        assert.equal((await s.call('/x')).status, 429)
        assert.equal((await s.call('/x', { method: 'HEAD' })).status, 429)
      } finally {
        await s.close()
      }
    })

    test('thirty /64s of one /48: only the /48 aggregate limit passes', async () => {
      const limiter = rateLimit({
        limits: '2/minute',
        key: 'ip',
        trustedProxies: ['127.0.0.1'],
        rules: [
          { name: 'net48', limits: '5/minute', key: 'ipv6/48' },
          { name: 'net24', limits: '1/minute', key: 'ipv4/24' },
        ],
      })
      const s = await serve(express, limiter)
      try {
        let ok = 0
        for (let i = 0; i < 30; i++) {
          const r = await s.call('/x', { headers: { 'x-forwarded-for': `2001:db8:42:${i.toString(16)}::1` } })
          if (r.status === 200) ok += 1
        }
        assert.equal(ok, 5)
        // Another /48 has its own aggregate; the IPv4 rule never applied to these clients.
        const other = await s.call('/x', { headers: { 'x-forwarded-for': '2001:db8:43::1' } })
        assert.equal(other.status, 200)
        assert.deepEqual((await other.json()).rules, ['default', 'net48'])
        assert.match(other.headers.get('ratelimit-policy'), /net48/)
        assert.doesNotMatch(other.headers.get('ratelimit-policy'), /net24/)
      } finally {
        await s.close()
      }
    })

    test('Forwarded: for= is read when configured, and X-Forwarded-For is then ignored', async () => {
      const s = await serve(
        express,
        rateLimit({ limits: '10/minute', trustedProxies: ['127.0.0.1', '10.0.0.0/8'], forwardedHeader: 'forwarded' }),
      )
      try {
        const key = async (headers) => (await (await s.call('/x', { headers })).json()).key
        assert.equal(await key({ forwarded: 'for="[2001:db8:cafe::17]:4711";proto=https' }), 'ip:2001:db8:cafe::/64')
        assert.equal(await key({ forwarded: 'for=6.6.6.6, for=203.0.113.7, for=10.1.1.1' }), 'ip:203.0.113.7')
        assert.equal(await key({ forwarded: 'for=6.6.6.6, for=_hidden' }), 'ip:127.0.0.1')
        assert.equal(await key({ 'x-forwarded-for': '203.0.113.9' }), 'ip:127.0.0.1')
      } finally {
        await s.close()
      }
    })
  })
}

/** GET `p` over the unix socket at `socketPath`; resolves { status, body }. */
function unixGet(socketPath, p, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, path: p, headers }, (res) => {
      let body = ''
      res.on('data', (c) => {
        body += c
      })
      res.on('end', () => resolve({ status: res.statusCode, body }))
    })
    req.on('error', reject)
    req.end()
  })
}

describe('a proxy on a unix socket', () => {
  for (const trustUnixSocket of [false, true]) {
    test(`trustUnixSocket: ${trustUnixSocket}`, async () => {
      const express = require('express')
      const app = express()
      app.use(rateLimit({ limits: '10/minute', trustUnixSocket, logger: { warn() {} } }))
      app.get('/x', (req, res) => res.json({ key: req.rateLimit.key }))
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'floodwall-uds-'))
      const socketPath = path.join(dir, 'app.sock')
      const server = await new Promise((resolve, reject) => {
        const srv = app.listen(socketPath)
        srv.once('listening', () => resolve(srv))
        srv.once('error', reject)
      })
      try {
        const r = await unixGet(socketPath, '/x', { 'x-forwarded-for': '6.6.6.6, 203.0.113.7' })
        assert.equal(r.status, 200)
        assert.equal(JSON.parse(r.body).key, trustUnixSocket ? 'ip:203.0.113.7' : 'ip:unknown')
      } finally {
        server.closeAllConnections?.()
        await new Promise((r) => server.close(() => r()))
        fs.rmSync(dir, { recursive: true, force: true })
      }
    })
  }
})

test('options name bad values', () => {
  assert.throws(
    () => new HttpLimiter({ limits: '1/minute', forwardedHeader: 'x-real-ip' }),
    (e) => e.code === 'ERR_FLOODWALL_CONFIG' && e.message.includes('"x-real-ip"'),
  )
  assert.throws(
    () => new HttpLimiter({ limits: '1/minute', key: 'ip+ipv4/33' }),
    (e) => e.code === 'ERR_FLOODWALL_CONFIG' && e.message.includes('"ipv4/33"'),
  )
  assert.throws(
    () => new HttpLimiter({ limits: '1/minute', trustUnixSocket: 'yes' }),
    (e) => e.code === 'ERR_FLOODWALL_CONFIG' && e.message.includes('trustUnixSocket'),
  )
  const h = new HttpLimiter({ limits: '1/minute', key: 'endpoint', forwardedHeader: 'Forwarded' })
  assert.equal(h.forwardedHeader, 'forwarded')
  assert.equal(h.needsRoute, true)
  assert.equal(new HttpLimiter({ limits: '1/minute' }).needsRoute, false)
})
