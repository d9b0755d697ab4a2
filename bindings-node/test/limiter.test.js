// The Limiter binding: decisions, options, errors with codes, and exact admission under
// concurrency on the embedded store and on a private redis-server.
'use strict'

const { test, before, after, describe } = require('node:test')
const assert = require('node:assert/strict')
const { Limiter, ManualClock } = require('..')
const { RedisServer, uniquePrefix, throwsConfig } = require('./helpers')

const T0 = 1_728_000_000_000

let redis
before(async () => {
  redis = await RedisServer.start()
})
after(async () => {
  await redis?.stop()
})

test('a decision carries every field, with null when nothing applies', async () => {
  const clock = new ManualClock(T0)
  const limiter = new Limiter({ limits: ['5/second', '100/minute'], algorithm: 'sliding_window', clock })
  const d = await limiter.check('user:42', { cost: 1 })
  assert.deepEqual(Object.keys(d).sort(), [
    'allowed',
    'limit',
    'limitedBy',
    'remaining',
    'resetAfter',
    'retryAfter',
    'source',
    'windows',
  ])
  assert.equal(d.allowed, true)
  assert.equal(d.limit, 5)
  assert.equal(d.remaining, 4)
  assert.equal(d.retryAfter, null)
  assert.equal(d.limitedBy, null)
  assert.equal(d.source, 'memory')
  assert.deepEqual(
    d.windows.map((w) => [w.name, w.limit, w.window, w.remaining, w.retryAfter]),
    [
      ['5/second', 5, 1, 4, null],
      ['100/minute', 100, 60, 99, null],
    ],
  )
  for (let i = 0; i < 4; i++) await limiter.check('user:42')
  const denied = await limiter.check('user:42')
  assert.equal(denied.allowed, false)
  assert.equal(denied.limitedBy, '5/second')
  assert.equal(typeof denied.retryAfter, 'number')
  assert.ok(denied.retryAfter > 0 && denied.retryAfter <= 2, `retryAfter ${denied.retryAfter} s`)
  assert.equal(limiter.store, 'memory')
  assert.deepEqual(limiter.limits, ['5/second', '100/minute'])
  assert.equal(limiter.algorithm, 'sliding_window')
  assert.equal(limiter.maxCost, 5)
})

test('a single limit string, peek, reset, cost', async () => {
  const clock = new ManualClock(T0)
  const limiter = new Limiter({ limits: '10/minute', algorithm: 'token_bucket', clock })
  assert.equal((await limiter.check('k', { cost: 7 })).remaining, 3)
  const p = await limiter.peek('k')
  assert.equal(p.allowed, true)
  assert.equal(p.remaining, 3)
  assert.equal((await limiter.check('k', { cost: 4 })).allowed, false)
  await limiter.reset('k')
  assert.equal((await limiter.check('k')).remaining, 9)
  clock.advance(60_000)
  assert.equal((await limiter.peek('k')).remaining, 10)
})

test('the manual clock moves only when told', () => {
  const clock = new ManualClock(T0)
  assert.equal(clock.now(), T0)
  clock.advance(1.5)
  assert.equal(clock.now(), T0 + 1.5)
  clock.set(T0 + 10)
  assert.equal(clock.now(), T0 + 10)
  assert.ok(Math.abs(new ManualClock().now() - Date.now()) < 5000)
})

describe('errors are Errors with a code and name the bad value', () => {
  const config = throwsConfig

  test('constructor', () => {
    config(() => new Limiter(), /limits/)
    config(() => new Limiter({}), /limits/)
    config(() => new Limiter({ limits: 'ten/second' }), /"ten\/second"/)
    config(() => new Limiter({ limits: ['5/second', '0/minute'] }), /"0\/minute"/)
    config(() => new Limiter({ limits: 5 }), /invalid limits 5/)
    config(() => new Limiter({ limits: [] }), /limits/)
    config(() => new Limiter({ limits: '5/second', algorithm: 'leaky' }), /"leaky"/)
    config(() => new Limiter({ limits: '5/second', redisURL: 'redis://x' }), /"redisURL"/)
    config(() => new Limiter({ limits: '5/second', redisUrl: 'http://127.0.0.1' }), /http:\/\/127\.0\.0\.1/)
    config(() => new Limiter({ limits: '5/second', timeoutMs: 0 }), /timeoutMs 0/)
    config(() => new Limiter({ limits: '5/second', prefix: 'a b' }), /"a b"/)
    config(() => new Limiter({ limits: '5/second', clock: Date }), /clock/)
    config(() => new Limiter({ limits: ['5/second', '6/second'] }), /5\/second, 6\/second/)
    config(() => new ManualClock(-1), /-1/)
    config(
      () => new Limiter({ limits: '5/second', breaker: { maxInFlight: 0 } }),
      /invalid breaker\.maxInFlight 0: must be a whole number of at least 1/,
    )
    config(() => new Limiter({ limits: '5/second', breaker: { maxInFlight: 2.5 } }), /breaker\.maxInFlight 2\.5/)
    config(
      () => new Limiter({ limits: '5/second', breaker: { maxInFlight: '64' } }),
      /breaker\.maxInFlight "64": must be a number/,
    )
    config(() => new Limiter({ limits: '5/second', breaker: { maxInflight: 8 } }), /"maxInflight"/)
    config(() => new Limiter({ limits: '5/second', name: '' }), /invalid name "": must not be empty/)
    config(() => new Limiter({ limits: '5/second', name: 7 }), /invalid name 7/)
  })

  test('calls reject (never throw) with the value named', async () => {
    const limiter = new Limiter({ limits: '5/second' })
    const rejects = (p, pattern) =>
      assert.rejects(p, (e) => {
        assert.ok(e instanceof Error)
        assert.equal(e.code, 'ERR_FLOODWALL_CONFIG')
        assert.match(e.message, pattern)
        return true
      })
    const p = limiter.check(42)
    assert.ok(p instanceof Promise)
    await rejects(p, /invalid key 42/)
    await rejects(limiter.check(''), /invalid key ""/)
    await rejects(limiter.check('k', { cost: 0 }), /cost 0/)
    await rejects(limiter.check('k', { cost: 1.5 }), /cost 1.5/)
    await rejects(limiter.check('k', { cost: 6 }), /"6"/)
    await rejects(limiter.check('k', { weight: 2 }), /"weight"/)
    await rejects(limiter.check('k', { traceparent: 42 }), /invalid traceparent 42/)
    await rejects(limiter.peek('k', { cost: 2 }), /"cost"/)
    await rejects(limiter.peek(null), /invalid key null/)
    await rejects(limiter.reset({}), /invalid key an object/)
  })

  test('an unreachable Redis is ERR_FLOODWALL_STORE, naming the URL', async () => {
    const gone = await RedisServer.start()
    const url = gone.url
    await gone.stop()
    const limiter = new Limiter({ limits: '5/second', redisUrl: url, timeoutMs: 300, fallback: 'error' })
    assert.equal(limiter.store, 'redis')
    await assert.rejects(limiter.check('k'), (e) => {
      assert.equal(e.code, 'ERR_FLOODWALL_STORE')
      assert.ok(e.message.includes(url), e.message)
      return true
    })
  })
})

for (const store of ['memory', 'redis']) {
  test(`1000 concurrent checks at limit 100 admit exactly 100 [${store}]`, async () => {
    // About the script's atomicity, so every answer must come from Redis: a generous deadline,
    // no fallback, and a breaker that does not count a burst's queueing as slow calls.
    const onRedis = {
      redisUrl: redis.url,
      prefix: uniquePrefix('race'),
      timeoutMs: 10_000,
      fallback: 'error',
      breaker: { slowCallMs: 10_000 },
    }
    const limiter = new Limiter({ limits: '100/hour', ...(store === 'redis' ? onRedis : {}) })
    await limiter.connect()
    const ds = await Promise.all(Array.from({ length: 1000 }, () => limiter.check('hot')))
    assert.equal(ds.filter((d) => d.allowed).length, 100)
    assert.ok(ds.every((d) => d.source === store))
    const remaining = ds
      .filter((d) => d.allowed)
      .map((d) => d.remaining)
      .sort((a, b) => a - b)
    assert.deepEqual(
      remaining,
      Array.from({ length: 100 }, (_, i) => i),
    )
  })
}

test('two limiters on one Redis share counts; a different prefix does not', async () => {
  const prefix = uniquePrefix('share')
  // exact: no deadline or fallback of a loaded machine's making
  const exact = { limits: '3/minute', redisUrl: redis.url, fallback: 'error', timeoutMs: 10_000 }
  const a = new Limiter({ ...exact, prefix })
  const b = new Limiter({ ...exact, prefix })
  const c = new Limiter({ ...exact, prefix: `${prefix}-other` })
  assert.equal((await a.check('k')).remaining, 2)
  assert.equal((await b.check('k')).remaining, 1)
  assert.equal((await c.check('k')).remaining, 2)
})

test('when Redis is down the fallback policy answers, with source "fallback"', async () => {
  const gone = await RedisServer.start()
  await gone.stop()
  const base = { limits: '2/minute', redisUrl: gone.url, timeoutMs: 300 }
  const local = new Limiter(base)
  const ds = [await local.check('k'), await local.check('k'), await local.check('k')]
  assert.deepEqual(
    ds.map((d) => [d.allowed, d.source]),
    [
      [true, 'fallback'],
      [true, 'fallback'],
      [false, 'fallback'],
    ],
  )
  const shared = new Limiter({ ...base, fallback: { mode: 'local', expectedInstances: 2 } })
  assert.deepEqual([(await shared.check('k')).allowed, (await shared.check('k')).allowed], [true, false])
  const open = await new Limiter({ ...base, fallback: 'open' }).check('k')
  assert.deepEqual([open.allowed, open.source], [true, 'fallback'])
  const closed = await new Limiter({ ...base, fallback: { mode: 'closed', retryAfterMs: 2500 } }).check('k')
  assert.deepEqual([closed.allowed, closed.retryAfter, closed.source], [false, 2.5, 'fallback'])
  assert.throws(() => new Limiter({ ...base, fallback: 'sideways' }), /"sideways"/)
  assert.throws(() => new Limiter({ ...base, fallback: { mode: 'open', retryAfterMs: 5 } }), /retryAfterMs/)
  assert.throws(
    () => new Limiter({ ...base, fallback: { mode: 'local', expectedInstances: 0 } }),
    /expectedInstances 0/,
  )
})

test('calls in one tick are batched, and each still gets its own answer or error', async () => {
  const clock = new ManualClock(T0)
  const limiter = new Limiter({ limits: ['3/second', '10/minute'], clock })
  const calls = [
    limiter.check('a'),
    limiter.peek('a'),
    limiter.check('', { cost: 1 }),
    limiter.check('a', { cost: 2 }),
    limiter.check('a', { cost: 4 }),
    limiter.check('b', {}),
    limiter.check(7),
    limiter.peek('a'),
  ]
  const got = await Promise.allSettled(calls)
  const show = (r) =>
    r.status === 'fulfilled' ? [r.value.allowed, r.value.remaining] : [r.reason.code, r.reason.message]
  assert.deepEqual(got.map(show), [
    [true, 2],
    [true, 2],
    ['ERR_FLOODWALL_CONFIG', 'invalid key "": must not be empty'],
    [true, 0],
    ['ERR_FLOODWALL_CONFIG', 'invalid cost "4": exceeds the smallest limit (3); such a request could never pass'],
    [true, 2],
    ['ERR_FLOODWALL_CONFIG', 'invalid key 7: must be a string'],
    [false, 0],
  ])
  assert.ok(got[2].reason instanceof Error)
  // A batched decision and a direct one have the same shape and values.
  const direct = await limiter._check('c')
  const batched = await limiter.check('d')
  assert.deepEqual(batched, direct)
  const denied = (await Promise.all([1, 2, 3, 4].map(() => limiter.check('e')))).pop()
  assert.deepEqual(denied, await limiter._check('e'))
  assert.equal(denied.limitedBy, '3/second')
  assert.equal(denied.windows[0].retryAfter, denied.retryAfter)
})

test('maxIdentities caps what the process holds; an abuser that keeps sending stays denied', async () => {
  throwsConfig(() => new Limiter({ limits: '5/hour', maxIdentities: 0 }), /maxIdentities/)
  const clock = new ManualClock(T0)
  const limiter = new Limiter({ limits: '5/hour', maxIdentities: 200, clock })
  for (let i = 0; i < 5; i++) assert.equal((await limiter.check('abuser')).allowed, true)
  for (let i = 0; i < 5_000; i++) {
    assert.equal((await limiter.check(`flood:${i}`)).allowed, true)
    if (i % 20 === 19) assert.equal((await limiter.check('abuser')).allowed, false, `after ${i + 1} new identities`)
  }
})
