// floodwall/express against real Express 4 and Express 5 servers on loopback: headers, the 429
// body, forged X-Forwarded-For, forged JWTs, route rules next to app-wide limits, and a Redis outage.
'use strict'

const { test, describe, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { Limiter, telemetry } = require('..')
const { rateLimit } = require('../express')
const { RedisServer, uniquePrefix, listen, recordingLogger } = require('./helpers')
const { sign, rsaPair, ecPair } = require('./jwt')

const flavours = [
  ['express 4', require('express4')],
  ['express 5', require('express')],
]

let redis
before(async () => {
  redis = await RedisServer.start()
})
after(async () => {
  await redis?.stop()
})

/** Start an app built by `setup(app)`; returns { get, close } where get(path, init) fetches. */
async function serve(express, setup) {
  const app = express()
  setup(app)
  app.use((err, _req, res, _next) => {
    res.status(500).json({ error: String(err.message), code: err.code })
  })
  const s = await listen(app)
  const call = (p, init = {}) => fetch(s.base + p, init)
  return { call, close: s.close }
}

const ok = (_req, res) => res.json({ ok: true })

for (const [flavour, express] of flavours) {
  describe(flavour, () => {
    test('the middleware and its rules take maxIdentities like any limiter option', async () => {
      const s = await serve(express, (app) => {
        app.use(
          rateLimit({
            limits: '2/minute',
            maxIdentities: 100,
            rules: [{ name: 'login', path: '/login', limits: '1/minute', maxIdentities: 50 }],
          }),
        )
        app.get('/login', ok)
      })
      try {
        assert.deepEqual([(await s.call('/login')).status, (await s.call('/login')).status], [200, 429])
      } finally {
        await s.close()
      }
      assert.throws(() => rateLimit({ limits: '1/minute', maxIdentities: 0 }), /maxIdentities/)
    })

    test('a shadow rule counts and reports but never denies, and sends no headers of its own', async () => {
      const name = `search-trial-${flavour.replace(' ', '')}`
      const lines = []
      const logger = { warn: (m) => lines.push(`warn ${m}`), info: (m) => lines.push(`info ${m}`) }
      const s = await serve(express, (app) => {
        app.use(
          rateLimit({
            limits: '100/minute',
            logger,
            rules: [{ name, path: '/search', limits: '2/minute', shadow: true }],
          }),
        )
        app.get('/search', (req, res) => res.json(req.rateLimit.shadowDenied))
      })
      const responses = []
      try {
        for (let i = 0; i < 5; i++) responses.push(await s.call('/search'))
        const bodies = await Promise.all(responses.map((r) => r.json()))
        assert.deepEqual(
          responses.map((r) => r.status),
          [200, 200, 200, 200, 200],
        )
        assert.deepEqual(bodies, [[], [], [name], [name], [name]])
        for (const r of responses) {
          // Only the enforced app-wide limit is described.
          assert.equal(r.headers.get('ratelimit-policy'), '"per-minute";q=100;w=60')
          assert.doesNotMatch(r.headers.get('ratelimit'), /,/)
          assert.equal(r.headers.get('retry-after'), null)
        }
      } finally {
        await s.close()
      }
      const count = (result) => {
        const want = `floodwall_decisions_total{limiter="${name}",source="memory",result="${result}"} `
        const l = telemetry
          .prometheusText()
          .split('\n')
          .find((x) => x.startsWith(want))
        return l === undefined ? undefined : Number(l.slice(want.length))
      }
      assert.deepEqual([count('allowed'), count('denied'), count('shadow_denied')], [2, 0, 3])
      // Three would-be denials, one info line (the next within a minute are only counted).
      const reported = lines.filter((l) => l.includes(`shadow rule "${name}"`))
      assert.equal(reported.length, 1, lines.join('\n'))
      assert.match(reported[0], /^info .*would have denied 1 request/)
    })

    test('the middleware-level shadow option and its validation', async () => {
      const s = await serve(express, (app) => {
        app.get(
          '/x',
          rateLimit({ name: `own-${flavour.replace(' ', '')}`, limits: '1/minute', shadow: true }),
          (req, res) => res.json(req.rateLimit.shadowDenied.length),
        )
      })
      try {
        const rs = [await s.call('/x'), await s.call('/x'), await s.call('/x')]
        assert.deepEqual(
          rs.map((r) => r.status),
          [200, 200, 200],
        )
        assert.deepEqual(await Promise.all(rs.map((r) => r.json())), [0, 1, 1])
        assert.ok(rs.every((r) => r.headers.get('ratelimit-policy') === null))
      } finally {
        await s.close()
      }
      assert.throws(
        () => rateLimit({ limits: '1/minute', shadow: 'yes' }),
        /invalid shadow "yes": must be true or false/,
      )
      assert.throws(
        () => rateLimit({ rules: [{ name: 'r', limits: '1/minute', shadow: 1 }] }),
        /invalid rules\[0\]\.shadow 1: must be true or false/,
      )
    })

    test('draft-10 and legacy headers, then a 429 with a JSON body and Retry-After', async () => {
      const s = await serve(express, (app) => {
        app.use(rateLimit({ limits: '3/minute', headers: 'both' }))
        app.get('/', ok)
      })
      try {
        const first = await s.call('/')
        assert.equal(first.status, 200)
        assert.equal(first.headers.get('ratelimit-policy'), '"per-minute";q=3;w=60')
        assert.match(first.headers.get('ratelimit'), /^"per-minute";r=2;t=\d+$/)
        assert.equal(first.headers.get('x-ratelimit-limit'), '3')
        assert.equal(first.headers.get('x-ratelimit-remaining'), '2')
        assert.equal(first.headers.get('retry-after'), null)
        await s.call('/')
        await s.call('/')
        const denied = await s.call('/')
        assert.equal(denied.status, 429)
        assert.match(denied.headers.get('content-type'), /^application\/json/)
        const body = await denied.json()
        assert.equal(body.error, 'rate_limited')
        assert.equal(body.limit, '3/minute')
        assert.ok(body.retry_after > 0 && body.retry_after <= 120, JSON.stringify(body))
        const retry = Number(denied.headers.get('retry-after'))
        assert.ok(retry >= 1 && retry <= 120 && retry >= body.retry_after, `Retry-After ${retry}`)
        assert.equal(denied.headers.get('x-ratelimit-remaining'), '0')
      } finally {
        await s.close()
      }
    })

    test('header styles: draft-10 only by default, legacy only on request', async () => {
      const s = await serve(express, (app) => {
        app.get('/draft', rateLimit({ name: 'draft', limits: '5/second' }), ok)
        app.get('/legacy', rateLimit({ name: 'legacy', limits: '5/second', headers: 'legacy' }), ok)
      })
      try {
        const d = await s.call('/draft')
        assert.equal(d.headers.get('ratelimit-policy'), '"per-second";q=5;w=1')
        assert.equal(d.headers.get('x-ratelimit-limit'), null)
        const l = await s.call('/legacy')
        assert.equal(l.headers.get('ratelimit-policy'), null)
        assert.equal(l.headers.get('x-ratelimit-limit'), '5')
      } finally {
        await s.close()
      }
    })

    test('a forged X-Forwarded-For from an untrusted peer buys nothing, and is warned about once', async () => {
      const logger = recordingLogger()
      const s = await serve(express, (app) => {
        app.use(rateLimit({ limits: '2/minute', logger }))
        app.get('/', ok)
      })
      try {
        const statuses = []
        for (let i = 0; i < 5; i++) {
          const r = await s.call('/', { headers: { 'x-forwarded-for': `198.51.100.${i}` } })
          statuses.push(r.status)
        }
        assert.deepEqual(statuses, [200, 200, 429, 429, 429])
        const warnings = logger.lines.filter((l) => l.includes('X-Forwarded-For'))
        assert.equal(warnings.length, 1, logger.lines.join('\n'))
        assert.match(warnings[0], /not a trusted proxy/)
      } finally {
        await s.close()
      }
    })

    test('behind a trusted proxy, the right-most untrusted X-Forwarded-For entry is the client', async () => {
      const logger = recordingLogger()
      const s = await serve(express, (app) => {
        app.use(rateLimit({ limits: '1/minute', trustedProxies: ['127.0.0.1', '10.0.0.0/8'], logger }))
        app.get('/', (req, res) => res.json({ key: req.rateLimit.key }))
      })
      try {
        const a = await s.call('/', { headers: { 'x-forwarded-for': '6.6.6.6, 203.0.113.7, 10.1.2.3' } })
        assert.equal(a.status, 200)
        assert.equal((await a.json()).key, 'ip:203.0.113.7')
        // Another client behind the same proxy has its own bucket ...
        assert.equal((await s.call('/', { headers: { 'x-forwarded-for': '203.0.113.8' } })).status, 200)
        // ... and the first one is out, whatever it puts on the left.
        const again = await s.call('/', { headers: { 'x-forwarded-for': '1.1.1.1, 203.0.113.7' } })
        assert.equal(again.status, 429)
        // IPv6 clients are grouped by /64.
        assert.equal((await s.call('/', { headers: { 'x-forwarded-for': '2001:db8:1:2::1' } })).status, 200)
        assert.equal((await s.call('/', { headers: { 'x-forwarded-for': '2001:db8:1:2::99' } })).status, 429)
        assert.equal(logger.lines.length, 0, logger.lines.join('\n'))
      } finally {
        await s.close()
      }
    })

    test('JWT users: a verified token has its own bucket; a forged one is keyed by IP', async () => {
      const secret = `test-secret-${flavour}-of-at-least-32-bytes`
      const s = await serve(express, (app) => {
        app.use(rateLimit({ limits: '2/minute', key: 'user', jwt: { secret } }))
        app.get('/', (req, res) => res.json({ key: req.rateLimit.key, verified: req.rateLimit.userVerified }))
      })
      const bearer = (t) => ({ headers: { authorization: `Bearer ${t}` } })
      try {
        const alice = sign({ sub: 'alice' }, { secret })
        const forged = [
          sign({ sub: 'alice' }, { secret: 'not-the-secret' }),
          sign({ sub: 'mallory' }, { alg: 'none' }),
          sign({ sub: 'alice', exp: Math.floor(Date.now() / 1000) - 60 }, { secret }),
          'not.a.jwt',
        ]
        // Anonymous and forged requests share the IP bucket.
        const r1 = await s.call('/', bearer(forged[0]))
        assert.deepEqual(await r1.json(), { key: 'ip:127.0.0.1', verified: false })
        assert.equal((await s.call('/', bearer(forged[1]))).status, 200)
        for (const t of forged) assert.equal((await s.call('/', bearer(t))).status, 429)
        assert.equal((await s.call('/')).status, 429)
        // The real user is unaffected.
        const r2 = await s.call('/', bearer(alice))
        assert.equal(r2.status, 200)
        assert.deepEqual(await r2.json(), { key: 'user:alice', verified: true })
      } finally {
        await s.close()
      }
    })

    test('JWT with RS256 and ES256 public keys', async () => {
      const rsa = rsaPair()
      const ec = ecPair()
      const other = rsaPair()
      const s = await serve(express, (app) => {
        const show = (req, res) => res.json({ key: req.rateLimit.key })
        app.get(
          '/rs',
          rateLimit({
            name: 'rs',
            limits: '5/minute',
            key: 'user',
            jwt: { publicKey: rsa.publicKey, algorithm: 'RS256' },
          }),
          show,
        )
        app.get(
          '/es',
          rateLimit({
            name: 'es',
            limits: '5/minute',
            key: 'user',
            jwt: { publicKey: ec.publicKey, algorithm: 'ES256' },
          }),
          show,
        )
      })
      const keyOf = async (p, t) => (await (await s.call(p, { headers: { authorization: `Bearer ${t}` } })).json()).key
      try {
        assert.equal(await keyOf('/rs', sign({ sub: 'r' }, { alg: 'RS256', privateKey: rsa.privateKey })), 'user:r')
        assert.equal(
          await keyOf('/rs', sign({ sub: 'r' }, { alg: 'RS256', privateKey: other.privateKey })),
          'ip:127.0.0.1',
        )
        // HS256 signed with the public key text: the algorithm-confusion attack.
        assert.equal(await keyOf('/rs', sign({ sub: 'r' }, { secret: rsa.publicKey })), 'ip:127.0.0.1')
        assert.equal(await keyOf('/es', sign({ sub: 'e' }, { alg: 'ES256', privateKey: ec.privateKey })), 'user:e')
        assert.equal(
          await keyOf('/es', sign({ sub: 'e' }, { alg: 'RS256', privateKey: rsa.privateKey })),
          'ip:127.0.0.1',
        )
      } finally {
        await s.close()
      }
    })

    test('app-wide and per-route limits: both apply to the route, only the app-wide one elsewhere', async () => {
      const s = await serve(express, (app) => {
        app.use(rateLimit({ name: 'app', limits: '4/minute' }))
        app.get('/strict', rateLimit({ name: 'strict', limits: '1/minute' }), ok)
        app.get('/free', ok)
      })
      try {
        assert.equal((await s.call('/strict')).status, 200)
        const denied = await s.call('/strict')
        assert.equal(denied.status, 429)
        assert.equal((await denied.json()).limit, '1/minute')
        // The app-wide limit counted both /strict requests.
        assert.equal((await s.call('/free')).status, 200)
        assert.equal((await s.call('/free')).status, 200)
        const last = await s.call('/free')
        assert.equal(last.status, 429)
        assert.equal((await last.json()).limit, '4/minute')
      } finally {
        await s.close()
      }
    })

    test('rules per path and method are decided together, with merged headers', async () => {
      const s = await serve(express, (app) => {
        app.use(
          rateLimit({
            name: 'site',
            limits: '100/minute',
            rules: [
              { name: 'login', path: '/login', methods: ['POST'], limits: '2/minute' },
              { name: 'api', path: '/api/*', limits: '3/minute', key: 'ip+endpoint' },
            ],
          }),
        )
        app.post('/login', ok)
        app.get('/login', ok)
        app.get('/api/items/:id', ok)
        app.get('/api/other', ok)
        app.get('/other', ok)
      })
      try {
        const first = await s.call('/login', { method: 'POST' })
        assert.equal(first.status, 200)
        const policy = first.headers.get('ratelimit-policy')
        assert.equal(policy, '"site-per-minute";q=100;w=60, "login-per-minute";q=2;w=60')
        assert.equal((await s.call('/login', { method: 'POST' })).status, 200)
        const denied = await s.call('/login', { method: 'POST' })
        assert.equal(denied.status, 429)
        assert.equal((await denied.json()).limit, '2/minute')
        // GET /login is not the POST rule; /other matches only the site-wide limit.
        assert.equal((await s.call('/login')).status, 200)
        const other = await s.call('/other')
        assert.equal(other.headers.get('ratelimit-policy'), '"per-minute";q=100;w=60')
        // The api rule keys by endpoint: each route (not each URL) has its own 3.
        for (let i = 0; i < 3; i++) assert.equal((await s.call('/api/items/1')).status, 200)
        assert.equal((await s.call('/api/items/1')).status, 429)
        assert.equal((await s.call('/api/items/2')).status, 429)
        assert.equal((await s.call('/api/other')).status, 200)
        // Matching is not fooled by case, double slashes or a trailing slash.
        assert.equal((await s.call('//LOGIN/', { method: 'POST' })).status, 429)
        assert.match((await s.call('/API/x')).headers.get('ratelimit-policy'), /"api-per-minute"/)
      } finally {
        await s.close()
      }
    })

    test('keys: a function, apiKey, global and composites', async () => {
      const s = await serve(express, (app) => {
        const show = (req, res) => res.json({ key: req.rateLimit.key })
        app.get('/fn', rateLimit({ name: 'fn', limits: '9/minute', key: (req) => `tenant:${req.query.t}` }), show)
        app.get(
          '/apikey',
          rateLimit({
            name: 'ak',
            limits: '9/minute',
            key: 'apiKey',
            apiKeyHeader: 'X-Key',
            apiKeys: { allow: ['secret-key-1'] },
          }),
          show,
        )
        app.get('/global', rateLimit({ name: 'g', limits: '9/minute', key: 'global' }), show)
        app.get('/c/:id', rateLimit({ name: 'c', limits: '9/minute', key: 'user+endpoint+ip' }), show)
      })
      const keyOf = async (p, init) => (await (await s.call(p, init)).json()).key
      try {
        assert.equal(await keyOf('/fn?t=acme'), 'tenant:acme')
        const k = await keyOf('/apikey', { headers: { 'x-key': 'secret-key-1' } })
        assert.match(k, /^apikey:#[0-9a-f]{32}$/)
        assert.ok(!k.includes('secret'))
        assert.equal(await keyOf('/apikey'), 'ip:127.0.0.1')
        assert.equal(await keyOf('/global'), 'global')
        assert.equal(await keyOf('/c/7'), 'ip:127.0.0.1|ep:GET /c/:id')
      } finally {
        await s.close()
      }
    })

    test('a key function giving undefined, null, "" or over 4 KiB: keyed by client IP, logged once, never a 500', async () => {
      const errors = []
      const logger = { warn: (m) => errors.push(`warn: ${m}`), error: (m) => errors.push(String(m)) }
      const bad = [undefined, null, '', 'k'.repeat(5000)]
      const s = await serve(express, (app) => {
        bad.forEach((key, i) => {
          const opts = { name: `bad${i}`, limits: '1/minute', trustedProxies: ['127.0.0.1'], logger, key: () => key }
          app.get(`/bad${i}`, rateLimit(opts), ok)
        })
      })
      try {
        for (let i = 0; i < bad.length; i++) {
          const from = (ip) => s.call(`/bad${i}`, { headers: { 'x-forwarded-for': ip } })
          const first = await from('198.51.100.1')
          assert.equal(first.status, 200, `${i}: ${await first.text()}`)
          assert.equal((await from('198.51.100.2')).status, 200, `${i}: a second client shares the first one's bucket`)
          const again = await from('198.51.100.1')
          assert.equal(again.status, 429, `${i}`)
          assert.ok(!(await again.text()).includes('kkkk'))
        }
        // one error line per middleware, none echoing the key
        assert.equal(errors.length, bad.length, errors.join('\n'))
        assert.ok(
          errors.every((l) => l.includes('key function') && !l.startsWith('warn')),
          errors.join('\n'),
        )
        assert.ok(!errors.some((l) => l.includes('kkkk')), 'the key is never echoed')
      } finally {
        await s.close()
      }
    })

    test('a shared limiter counts across middlewares; skip and a custom handler', async () => {
      const shared = new Limiter({ limits: '2/minute' })
      const s = await serve(express, (app) => {
        const handler = (req, res) =>
          res
            .status(503)
            .json({ custom: true, retry: req.rateLimit.retryAfter > 0, limitedBy: req.rateLimit.limitedBy })
        app.get('/a', rateLimit({ limiter: shared, handler }), ok)
        app.get('/b', rateLimit({ limiter: shared, handler }), ok)
        app.get('/skip', rateLimit({ limiter: shared, skip: (req) => req.query.vip === '1' }), ok)
      })
      try {
        assert.equal((await s.call('/a')).status, 200)
        assert.equal((await s.call('/b')).status, 200)
        const c = await s.call('/a')
        assert.equal(c.status, 503)
        assert.deepEqual(await c.json(), { custom: true, retry: true, limitedBy: '2/minute' })
        assert.equal((await s.call('/skip?vip=1')).status, 200)
        assert.equal((await s.call('/skip')).status, 429)
      } finally {
        await s.close()
      }
    })

    test('a Redis outage never becomes a 500: the fallback policy answers and it is logged once', async () => {
      const own = await RedisServer.start()
      const logger = recordingLogger()
      const s = await serve(express, (app) => {
        const opts = { redisUrl: own.url, prefix: uniquePrefix('outage'), timeoutMs: 300, logger }
        app.get('/local', rateLimit({ name: 'local', limits: '3/minute', ...opts }), ok)
        app.get('/error', rateLimit({ name: 'error', limits: '1/minute', fallback: 'error', ...opts }), ok)
        app.get(
          '/closed',
          rateLimit({ name: 'closed', limits: '9/minute', fallback: { mode: 'closed', retryAfterMs: 5000 }, ...opts }),
          ok,
        )
      })
      try {
        assert.equal((await s.call('/local')).status, 200)
        assert.equal((await s.call('/error')).status, 200)
        assert.equal((await s.call('/error')).status, 429)
        assert.equal(logger.lines.length, 0, logger.lines.join('\n'))
        await own.kill()
        // Default fallback 'local': this process enforces the limit itself (one count already
        // spent in Redis is not known here, so 3 more pass).
        const local = []
        for (let i = 0; i < 4; i++) local.push((await s.call('/local')).status)
        assert.deepEqual(local, [200, 200, 200, 429])
        // fallback 'error': the store error reaches the adapter, which lets requests through.
        for (let i = 0; i < 3; i++) assert.equal((await s.call('/error')).status, 200)
        // fallback 'closed' denies by choice, with the configured wait.
        const closed = await s.call('/closed')
        assert.equal(closed.status, 429)
        assert.equal(closed.headers.get('retry-after'), '5')
        // One warning per middleware, however many requests failed.
        const warnings = logger.lines.filter((l) => l.includes('Redis is unavailable'))
        assert.equal(warnings.length, 3, logger.lines.join('\n'))
        assert.match(
          warnings.find((w) => w.includes('"local"')),
          /decided by the fallback policy/,
        )
        assert.match(
          warnings.find((w) => w.includes('"error"')),
          /request allowed/,
        )
      } finally {
        await s.close()
        await own.stop()
      }
    })

    test('onStoreError receives a coded Error naming the rules', async () => {
      const own = await RedisServer.start()
      await own.stop()
      const errors = []
      const s = await serve(express, (app) => {
        const onStoreError = (e) => errors.push(e)
        app.get(
          '/e',
          rateLimit({
            name: 'e',
            limits: '2/minute',
            redisUrl: own.url,
            timeoutMs: 300,
            fallback: 'error',
            onStoreError,
          }),
          ok,
        )
        app.get(
          '/o',
          rateLimit({
            name: 'o',
            limits: '2/minute',
            redisUrl: own.url,
            timeoutMs: 300,
            fallback: 'open',
            onStoreError,
          }),
          ok,
        )
      })
      try {
        assert.equal((await s.call('/e')).status, 200)
        assert.equal((await s.call('/o')).status, 200)
        assert.equal(errors.length, 2)
        assert.ok(errors.every((e) => e.code === 'ERR_FLOODWALL_STORE'))
        assert.deepEqual(
          errors.map((e) => e.rules),
          [['e'], ['o']],
        )
        assert.match(errors[0].message, new RegExp(own.url.replace(/[/.]/g, '\\$&')))
      } finally {
        await s.close()
      }
    })
  })
}

describe('configuration errors are thrown at setup with a code and the bad value', () => {
  const config = (options, pattern) =>
    assert.throws(
      () => rateLimit(options),
      (e) => {
        assert.equal(e.code, 'ERR_FLOODWALL_CONFIG', e.message)
        assert.match(e.message, pattern)
        return true
      },
    )
  test('options', () => {
    config(undefined, /options/)
    config({}, /limits/)
    config({ limits: '5/fortnight' }, /"5\/fortnight"/)
    config({ limits: '5/second', key: 'user+banana' }, /"banana"/)
    config({ limits: '5/second', headers: 'draft-7' }, /"draft-7"/)
    config({ limits: '5/second', trustedProxies: ['10.0.0.0/33'] }, /10\.0\.0\.0\/33/)
    config({ limits: '5/second', ipv6Prefix: 129 }, /129/)
    config({ limits: '5/second', jwt: { secret: '' } }, /secret/)
    config(
      { limits: '5/second', jwt: { secret: 'dev-secret-change-me' } },
      /JWT secret "<20 bytes>".*at least 32 bytes/,
    )
    config({ limits: '5/second', key: 'apiKey' }, /no way to verify keys/)
    config({ limits: '5/second', key: 'apiKey', apiKeys: { verify: 'yes' } }, /apiKeys\.verify/)
    config({ limits: '5/second', key: 'apiKey', apiKeys: { signingSecret: 'short' } }, /signing secret/)
    config({ limits: '5/second', key: 'apiKey', apiKeys: { allow: 'k' } }, /apiKeys\.allow/)
    config({ limits: '5/second', jwt: { secret: 'x'.repeat(32), requireExp: 'yes' } }, /requireExp/)
    config({ limits: '5/second', jwt: { publicKey: 'nope', algorithm: 'RS256' } }, /nope/)
    config({ limits: '5/second', jwt: { publicKey: rsaPair().publicKey, algorithm: 'HS512' } }, /"HS512"/)
    config({ limits: '5/second', trustedProxy: ['10.0.0.1'] }, /"trustedProxy"/)
    config({ limits: '5/second', limiter: new Limiter({ limits: '1/second' }) }, /either/)
    config({ rules: [{ name: 'x', path: '/x' }] }, /limits/)
    config({ rules: [{ name: 'bad name', path: '/x', limits: '1/second' }] }, /"bad name"/)
    config({ rules: [{ name: 'x', path: '/x', methods: ['GE T'], limits: '1/second' }] }, /"GE T"/)
    config({ limits: '5/second', skip: true }, /skip/)
    config({ rules: [{ name: 'x', path: '/x', limits: '1/second', key: () => 'k' }] }, /rules\[0\]\.key/)
    config({ limits: '5/second', trustTraceparent: 'yes' }, /trustTraceparent "yes"/)
  })

  test('a rule cost above its limit is refused when the middleware is built, naming both', () => {
    config(
      { limits: '5/minute', cost: 6 },
      /cost "6": rule "default": exceeds its limit of 5 per request \(5\/minute\)/,
    )
    config({ limits: ['10/second', '2/minute'], cost: 3 }, /cost "3".*limit of 2/)
    config(
      { rules: [{ name: 'login', path: '/login', limits: '3/minute', cost: 4 }] },
      /cost "4": rule "login".*limit of 3/,
    )
    config({ limiter: new Limiter({ limits: '2/minute' }), cost: 3 }, /cost "3".*limit of 2/)
    rateLimit({ limits: '5/minute', cost: 5 })
  })
})
