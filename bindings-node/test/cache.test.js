// The `cache` option (the core's local cache layer: denial cache, coalescing, leases) from Node,
// against a private redis-server: where decisions come from, admission under concurrency, option
// errors, cacheStats(), and the Express middleware building a cached limiter.
'use strict'

const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { Limiter } = require('..')
const { rateLimit } = require('../express')
const express = require('express')
const { RedisServer, uniquePrefix, listen, throwsConfig: config } = require('./helpers')

let redis
before(async () => {
  redis = await RedisServer.start()
})
after(async () => {
  await redis?.stop()
})

// Every answer from Redis or the cache, never the fallback: a generous deadline, no fallback, and a
// breaker that does not count a burst's queueing as slow calls.
const onRedis = (name) => ({
  redisUrl: redis.url,
  prefix: uniquePrefix(name),
  timeoutMs: 10_000,
  fallback: 'error',
  breaker: { slowCallMs: 10_000 },
})

test('a denied identity is answered by the cache until its retry time', async () => {
  // 5/minute: 1% of it is under 2 permits, so no leases; only the denial cache answers locally.
  const limiter = new Limiter({ limits: '5/minute', cache: true, ...onRedis('denial') })
  const sources = []
  for (let i = 0; i < 5; i++) {
    const d = await limiter.check('k')
    assert.equal(d.allowed, true)
    sources.push(d.source)
  }
  assert.deepEqual([...new Set(sources)], ['redis'])
  const denied = await limiter.check('k')
  assert.equal(denied.allowed, false)
  assert.equal(denied.source, 'redis')
  const cached = await limiter.check('k')
  assert.equal(cached.allowed, false)
  assert.equal(cached.source, 'cache')
  assert.equal(cached.limitedBy, '5/minute')
  assert.ok(cached.retryAfter > 0 && cached.retryAfter <= denied.retryAfter, `retryAfter ${cached.retryAfter} s`)
})

test('a hot identity is admitted from a lease, and its permits are counted', async () => {
  const limiter = new Limiter({ limits: '10000/minute', cache: true, ...onRedis('lease') })
  const counts = new Map()
  for (let i = 0; i < 200; i++) {
    const d = await limiter.check('hot')
    assert.equal(d.allowed, true)
    counts.set(d.source, (counts.get(d.source) ?? 0) + 1)
  }
  assert.ok((counts.get('lease') ?? 0) > 0, `sources: ${JSON.stringify([...counts])}`)
  assert.deepEqual(
    [...counts.keys()].filter((s) => s !== 'redis' && s !== 'lease'),
    [],
  )
  const s = limiter.cacheStats()
  assert.deepEqual(Object.keys(s).sort(), [
    'entries',
    'leasesGranted',
    'maxBytes',
    'permitsLeased',
    'permitsReturned',
    'weightedBytes',
  ])
  assert.ok(s.entries >= 1)
  assert.ok(s.weightedBytes > 0 && s.weightedBytes <= s.maxBytes)
  assert.ok(s.leasesGranted >= 1)
  assert.ok(s.permitsLeased >= counts.get('lease'), `${s.permitsLeased} permits leased, ${counts.get('lease')} used`)
})

test('1000 concurrent checks at limit 100 with the cache on admit at most 100', async () => {
  const limiter = new Limiter({ limits: '100/hour', cache: true, ...onRedis('race') })
  await limiter.connect()
  const ds = await Promise.all(Array.from({ length: 1000 }, () => limiter.check('hot')))
  const allowed = ds.filter((d) => d.allowed)
  assert.ok(allowed.length <= 100, `${allowed.length} admitted`)
  assert.ok(allowed.length > 0)
  assert.ok(
    ds.every((d) => ['redis', 'cache', 'lease'].includes(d.source)),
    [...new Set(ds.map((d) => d.source))].join(),
  )
  assert.ok(ds.filter((d) => !d.allowed).every((d) => d.retryAfter > 0))
})

test('with leases across two instances, admissions stay within the limit plus the drift budget', async () => {
  // driftRatio 0.05 of 1000: up to 50 permits may sit in leases; admissions never pass 1000 + 50.
  const shared = { limits: '1000/hour', cache: { driftRatio: 0.05 }, ...onRedis('drift') }
  const a = new Limiter(shared)
  const b = new Limiter(shared)
  const ds = []
  for (let round = 0; round < 6; round++) {
    ds.push(...(await Promise.all(Array.from({ length: 500 }, (_, i) => (i % 2 ? a : b).check('hot')))))
  }
  const allowed = ds.filter((d) => d.allowed).length
  assert.ok(allowed <= 1050, `${allowed} admitted`)
  assert.ok(allowed >= 900, `${allowed} admitted`)
})

test('cache options: true, an object of overrides, false; cacheStats() is null without a cache', () => {
  const url = redis.url
  assert.equal(new Limiter({ limits: '5/second', redisUrl: url }).cacheStats(), null)
  assert.equal(new Limiter({ limits: '5/second', redisUrl: url, cache: false }).cacheStats(), null)
  assert.equal(new Limiter({ limits: '5/second', redisUrl: url, cache: true }).cacheStats().maxBytes, 64 * 1024 * 1024)
  const custom = new Limiter({
    limits: '5/second',
    redisUrl: url,
    cache: {
      denialCache: true,
      coalesce: true,
      maxBatch: 64,
      batchWindowUs: 200,
      leases: false,
      leaseMs: 400,
      driftRatio: 0.02,
      maxLease: 50,
      maxBytes: 1 << 20,
      idleMs: 5000,
      jitterRatio: 0.2,
    },
  })
  assert.equal(custom.cacheStats().maxBytes, 1 << 20)
  assert.equal(new Limiter({ limits: '5/second', redisUrl: url, cache: {} }).cacheStats().entries, 0)
})

test('a bad cache option is ERR_FLOODWALL_CONFIG naming the value', () => {
  const url = redis.url
  const make = (cache) => () => new Limiter({ limits: '5/second', redisUrl: url, cache })
  config(make('yes'), /invalid cache "yes"/)
  config(make(1), /invalid cache 1/)
  config(make([]), /invalid cache an array/)
  config(make({ lease: true }), /unknown cache option key "lease": expected one of denialCache, .*leaseMs/)
  config(make({ leaseMs: 50 }), /invalid cache\.leaseMs "50": must be 100–500/)
  config(make({ leaseMs: 1.5 }), /invalid cache\.leaseMs 1\.5/)
  config(make({ batchWindowUs: 501 }), /invalid cache\.batchWindowUs "501": must be 0–500/)
  config(make({ driftRatio: 0.5 }), /invalid cache\.driftRatio "0\.5": must be in \[0, 0\.1\]/)
  config(make({ driftRatio: -1 }), /invalid cache\.driftRatio -1/)
  config(make({ jitterRatio: 0.5 }), /invalid cache\.jitterRatio "0\.5"/)
  config(make({ maxBatch: 0 }), /invalid cache\.maxBatch 0/)
  config(make({ maxBytes: 100 }), /maxBytes=100/)
  config(make({ coalesce: 'no' }), /invalid cache\.coalesce "no": must be true or false/)
})

test('the Express middleware builds its limiter with the cache', async () => {
  config(() => rateLimit({ limits: '3/minute', redisUrl: redis.url, cache: { leaseMs: 5 } }), /cache\.leaseMs "5"/)
  config(
    () => rateLimit({ rules: [{ name: 'r', limits: '3/minute', redisUrl: redis.url, cache: 'on' }] }),
    /invalid cache "on"/,
  )
  // the cache belongs to a limiter: a shared one brings its own
  const shared = new Limiter({ limits: '3/minute', redisUrl: redis.url })
  config(() => rateLimit({ limiter: shared, cache: true }), /either `limiter` or `limits`/)
  const app = express()
  app.use(rateLimit({ limits: '2/minute', key: 'global', cache: true, ...onRedis('express') }))
  app.get('/', (_req, res) => res.json({ ok: true }))
  const s = await listen(app)
  try {
    const statuses = []
    for (let i = 0; i < 4; i++) statuses.push((await fetch(`${s.base}/`)).status)
    assert.deepEqual(statuses, [200, 200, 429, 429])
  } finally {
    await s.close()
  }
})
