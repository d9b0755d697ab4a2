// The shared scenarios in tests/conformance/*.json (see its README), run on the embedded store
// with a ManualClock and on a private redis-server with the same clock standing in for TIME.
'use strict'

const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { Limiter, ManualClock } = require('..')
const { RedisServer, uniquePrefix } = require('./helpers')

const T0 = 1_728_000_000_000
const DIR = path.join(__dirname, '..', '..', 'tests', 'conformance')

const scenarios = fs
  .readdirSync(DIR)
  .filter((f) => f.endsWith('.json'))
  .sort()
  .map((f) => [f, JSON.parse(fs.readFileSync(path.join(DIR, f), 'utf8'))])

let redis
before(async () => {
  redis = await RedisServer.start()
})
after(async () => {
  await redis?.stop()
})

test('the scenario files are there', () => {
  assert.ok(scenarios.length >= 5, `found ${scenarios.length} scenarios in ${DIR}`)
})

function near(got, wantMs, ctx) {
  if (wantMs === null) {
    assert.equal(got, null, ctx)
  } else {
    assert.ok(
      got !== null && Math.abs(got * 1000 - wantMs) <= 1,
      `${ctx}: ${got === null ? null : got * 1000} ms != ${wantMs} ms`,
    )
  }
}

async function run(file, sc, store) {
  const clock = new ManualClock(T0)
  const limiter = new Limiter({
    limits: sc.limits,
    algorithm: sc.algorithm,
    clock,
    // No fallback on Redis: a slow call must fail the test, not be answered locally.
    ...(store === 'redis'
      ? {
          redisUrl: redis.url,
          prefix: uniquePrefix('conf'),
          timeoutMs: 10_000,
          fallback: 'error',
          breaker: { slowCallMs: 10_000 },
        }
      : {}),
  })
  assert.equal(limiter.store, store)
  for (const [i, step] of sc.steps.entries()) {
    clock.set(T0 + step.at_ms)
    const op = step.op ?? 'check'
    for (let r = 0; r < (step.repeat ?? 1); r++) {
      const ctx = `${file} [${store}] step ${i} (repeat ${r})`
      let d
      if (op === 'check') d = await limiter.check(step.key, { cost: step.cost ?? 1 })
      else if (op === 'peek') d = await limiter.peek(step.key)
      else if (op === 'reset') {
        await limiter.reset(step.key)
        continue
      } else assert.fail(`${ctx}: unknown op ${op}`)
      const exp = step.expect
      if (!exp) continue
      const shown = `${ctx}: ${JSON.stringify(d)}`
      if ('allowed' in exp) assert.equal(d.allowed, exp.allowed, shown)
      if ('remaining' in exp) assert.equal(d.remaining, exp.remaining, shown)
      if ('limit' in exp) assert.equal(d.limit, exp.limit, shown)
      if ('limited_by' in exp) assert.equal(d.limitedBy, exp.limited_by, shown)
      if ('retry_after_ms' in exp) near(d.retryAfter, exp.retry_after_ms, `${shown}: retryAfter`)
      if ('reset_after_ms' in exp) near(d.resetAfter, exp.reset_after_ms, `${shown}: resetAfter`)
    }
  }
}

for (const [file, sc] of scenarios) {
  for (const store of ['memory', 'redis']) {
    test(`${file} [${store}]: ${sc.name}`, () => run(file, sc, store))
  }
}
