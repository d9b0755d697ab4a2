// The batching in index.js on a private redis-server: calls made in one tick cross into Rust as one
// batch, and each caller still gets its own decision or its own coded error; a lone call is not
// held back, and a pending batch keeps Node alive until it is answered (and no longer).
'use strict'

const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { execFile } = require('node:child_process')
const path = require('node:path')
const { Limiter, ManualClock } = require('..')
const { RedisServer, uniquePrefix } = require('./helpers')

let redis
before(async () => {
  redis = await RedisServer.start()
})
after(async () => {
  await redis?.stop()
})

/** Every answer from Redis: a generous deadline, no fallback, a breaker that ignores queueing. */
function onRedis(name) {
  return {
    redisUrl: redis.url,
    prefix: uniquePrefix(name),
    timeoutMs: 10_000,
    fallback: 'error',
    breaker: { slowCallMs: 10_000 },
  }
}

test('checks in one tick on one key at limit N: exactly N pass, each with its own remaining', async () => {
  const limiter = new Limiter({ limits: ['50/minute', '1000/hour'], ...onRedis('tick') })
  await limiter.connect()
  // 200 calls: several batches of at most MAX_BATCH in flight at once
  const ds = await Promise.all(Array.from({ length: 200 }, () => limiter.check('one')))
  const allowed = ds.filter((d) => d.allowed)
  assert.equal(allowed.length, 50)
  assert.deepEqual(
    allowed.map((d) => d.remaining).sort((a, b) => a - b),
    Array.from({ length: 50 }, (_, i) => i),
  )
  for (const d of ds) {
    assert.equal(d.source, 'redis')
    assert.deepEqual(
      d.windows.map((w) => [w.name, w.limit, w.window]),
      [
        ['50/minute', 50, 60],
        ['1000/hour', 1000, 3600],
      ],
    )
  }
  for (const d of ds.filter((x) => !x.allowed)) {
    assert.equal(d.limitedBy, '50/minute')
    assert.ok(d.retryAfter > 0)
    assert.equal(d.windows[0].retryAfter, d.retryAfter)
    assert.equal(d.windows[1].retryAfter, null)
  }
})

test('one bad call among good ones fails only its own caller, with ERR_FLOODWALL_CONFIG', async () => {
  const limiter = new Limiter({ limits: '10/minute', ...onRedis('bad') })
  await limiter.connect()
  const calls = ['a', 'b', '', 'c'].map((k) => limiter.check(k))
  calls.push(limiter.check('d', { cost: 11 })) // more than the limit: refused by the core, in the batch
  calls.push(limiter.check('e', { cost: 2 }))
  const got = await Promise.allSettled(calls)
  assert.deepEqual(
    got.map((r) => r.status),
    ['fulfilled', 'fulfilled', 'rejected', 'fulfilled', 'rejected', 'fulfilled'],
  )
  for (const i of [2, 4]) {
    assert.ok(got[i].reason instanceof Error)
    assert.equal(got[i].reason.code, 'ERR_FLOODWALL_CONFIG')
  }
  assert.match(got[2].reason.message, /invalid key ""/)
  assert.match(got[4].reason.message, /exceeds the smallest limit \(10\)/)
  assert.deepEqual(
    got.filter((r) => r.status === 'fulfilled').map((r) => r.value.remaining),
    [9, 9, 9, 8],
  )
})

test('checks and peeks in one tick: peeks consume nothing; reset clears the count', async () => {
  const limiter = new Limiter({ limits: '5/minute', ...onRedis('mixed') })
  await limiter.connect()
  const [c1, p1, c2, p2, c3] = await Promise.all([
    limiter.check('k'),
    limiter.peek('k'),
    limiter.check('k'),
    limiter.peek('k'),
    limiter.check('k'),
  ])
  assert.deepEqual([c1, c2, c3].map((d) => d.remaining).sort(), [2, 3, 4])
  for (const p of [p1, p2]) {
    assert.equal(p.allowed, true)
    assert.ok(p.remaining >= 2 && p.remaining <= 5, `peek remaining ${p.remaining}`)
  }
  assert.equal((await limiter.peek('k')).remaining, 2)
  assert.equal((await limiter.check('k')).remaining, 1)
  await limiter.reset('k')
  assert.equal((await limiter.peek('k')).remaining, 5)
})

test('the local fallback names its scaled-down limits, batched as directly', async () => {
  // Redis gone: each instance decides alone with its share (10/minute over 2 instances: 5/minute),
  // limits that are not the limiter's own, and a batched answer must name them as a direct one does.
  const gone = await RedisServer.start()
  await gone.stop()
  const clock = new ManualClock(1_728_000_000_000)
  const limiter = new Limiter({
    limits: ['10/minute', '100/hour'],
    redisUrl: gone.url,
    timeoutMs: 300,
    fallback: { mode: 'local', expectedInstances: 2 },
    clock,
  })
  for (let i = 0; i < 6; i++) {
    const [batched, direct] = await Promise.all([limiter.check('a'), limiter._check('b')])
    assert.deepEqual(batched, direct)
    assert.equal(batched.source, 'fallback')
    assert.deepEqual(
      batched.windows.map((w) => w.name),
      ['5/minute', '50/hour'],
    )
  }
  const denied = await limiter.check('a')
  assert.equal(denied.allowed, false)
  assert.equal(denied.limitedBy, '5/minute')
})

test('a lone check is answered without waiting for company, and Node exits once it is', async () => {
  // A child process that makes one check and nothing else: the batch in flight must keep it alive
  // until the answer comes, and must not keep it alive after.
  const script = `
    const { Limiter } = require(${JSON.stringify(path.join(__dirname, '..'))})
    const l = new Limiter({ limits: '5/minute', redisUrl: process.argv[1], prefix: process.argv[2], timeoutMs: 10000 })
    const t0 = performance.now()
    l.check('alone').then((d) => console.log(JSON.stringify([d.allowed, d.remaining, d.source, performance.now() - t0])))
  `
  const started = performance.now()
  const out = await new Promise((resolve, reject) => {
    execFile(process.execPath, ['-e', script, redis.url, uniquePrefix('alone')], { timeout: 20_000 }, (err, stdout) =>
      err ? reject(err) : resolve(stdout),
    )
  })
  const [allowed, remaining, source] = JSON.parse(out)
  assert.deepEqual([allowed, remaining, source], [true, 4, 'redis'])
  // exited on its own (execFile's timeout would have killed it, with an error)
  assert.ok(performance.now() - started < 20_000)
})
