// Identities a client cannot invent, against a real Express server on loopback: API keys count
// apart only once verified (an allow-list, signed keys, or the app's verify function), and JWTs
// are held to a 32-byte HS256 secret, an `iat` not in the future and, on request, an `exp`.
'use strict'

const { test } = require('node:test')
const assert = require('node:assert/strict')
const crypto = require('node:crypto')
const express = require('express')
const { HttpLimiter } = require('..')
const { rateLimit } = require('../express')
const { listen, recordingLogger } = require('./helpers')
const { sign } = require('./jwt')

const SIGNING = 'api-key-signing-secret-of-32-bytes-or-more'
const KEY_SECRET = 'bucket-key-secret-of-at-least-32-bytes'
const SECRET = 'test-secret-for-hs256-at-least-32-bytes!'

/** The documented signed-key format, made with node:crypto only. */
const signedKey = (id, secret = SIGNING) => `${id}.${crypto.createHmac('sha256', secret).update(id).digest('hex')}`

async function serve(options) {
  const app = express()
  app.use(rateLimit(options))
  app.get('/', (req, res) => res.json({ key: req.rateLimit.key, rejected: req.rateLimit.apiKeyRejected }))
  app.use((err, _req, res, _next) => res.status(500).json({ error: String(err.message) }))
  const s = await listen(app)
  const get = (headers = {}) => fetch(`${s.base}/`, { headers })
  return { get, close: s.close }
}

for (const key of ['apiKey', 'apiKey+ip']) {
  test(`50 invented API keys from one IP share its bucket (${key})`, async () => {
    // The review's bypass: 50 random X-API-Key values at 2/minute all passed.
    const s = await serve({ limits: '2/minute', key, apiKeys: { allow: ['sk_live_real'], keySecret: KEY_SECRET } })
    try {
      const codes = []
      for (let i = 0; i < 50; i++) {
        codes.push((await s.get({ 'x-api-key': crypto.randomBytes(16).toString('hex') })).status)
      }
      assert.equal(codes.filter((c) => c === 200).length, 2)
      assert.equal(codes.filter((c) => c === 429).length, 48)
      const real = await s.get({ 'x-api-key': 'sk_live_real' })
      assert.equal(real.status, 200)
      const body = await real.json()
      assert.match(body.key, /^apikey:#[0-9a-f]{32}/)
      assert.equal(body.rejected, false)
    } finally {
      await s.close()
    }
  })
}

test('signed keys are bucketed by id; forged ones by IP', async () => {
  const s = await serve({ limits: '9/minute', key: 'apiKey', apiKeys: { signingSecret: SIGNING } })
  try {
    assert.deepEqual(await (await s.get({ 'x-api-key': signedKey('acct_42') })).json(), {
      key: 'apikey:acct_42',
      rejected: false,
    })
    for (const forged of [
      signedKey('acct_42', 'x'.repeat(32)),
      `${signedKey('acct_42').slice(0, -1)}0`,
      'acct_42',
      signedKey('acct_42').replace('acct_42', 'acct_43'),
    ]) {
      assert.deepEqual(await (await s.get({ 'x-api-key': forged })).json(), { key: 'ip:127.0.0.1', rejected: true })
    }
  } finally {
    await s.close()
  }
})

for (const flavour of ['sync', 'async']) {
  test(`a verify function (${flavour}) names the identity; unknown keys and throws are anonymous`, async () => {
    const accounts = { 'k-a1': 'acct-1', 'k-a1-second': 'acct-1', 'k-self': true }
    const calls = []
    const lookup = (k) => {
      calls.push(k)
      if (k === 'k-boom') throw new Error('database down')
      return accounts[k] ?? null
    }
    const verify = flavour === 'sync' ? lookup : async (k) => lookup(k)
    const logger = recordingLogger()
    const s = await serve({ limits: '2/minute', key: 'apiKey', logger, apiKeys: { verify, keySecret: KEY_SECRET } })
    try {
      const seen = {}
      for (const k of ['k-a1', 'k-a1-second', 'k-self', 'unknown', 'k-boom', 'k-boom']) {
        const r = await s.get({ 'x-api-key': k })
        seen[k] = r.status === 200 ? await r.json() : r.status
      }
      assert.deepEqual(seen['k-a1'], { key: 'apikey:acct-1', rejected: false })
      assert.deepEqual(seen['k-a1-second'], { key: 'apikey:acct-1', rejected: false })
      assert.match(seen['k-self'].key, /^apikey:#/)
      assert.deepEqual(seen.unknown, { key: 'ip:127.0.0.1', rejected: true })
      // A throwing verify is a failed lookup, never a 500; the IP bucket (2/minute) is then spent.
      assert.deepEqual(seen['k-boom'], 429)
      assert.equal((await s.get()).status, 429, 'no key: the same IP bucket')
      assert.deepEqual(calls, ['k-a1', 'k-a1-second', 'k-self', 'unknown', 'k-boom', 'k-boom'])
      assert.equal(logger.lines.filter((l) => l.includes('apiKeys.verify threw')).length, 1, logger.lines.join('\n'))
    } finally {
      await s.close()
    }
  })
}

test('hashed API key buckets in Redis need a shared secret', () => {
  const saved = process.env.FLOODWALL_KEY_SECRET
  delete process.env.FLOODWALL_KEY_SECRET
  try {
    const redisUrl = 'redis://127.0.0.1:1'
    assert.throws(
      () => new HttpLimiter({ limits: '2/minute', key: 'apiKey', redisUrl, apiKeys: { allow: ['k'] } }),
      (e) => e.code === 'ERR_FLOODWALL_CONFIG' && /FLOODWALL_KEY_SECRET/.test(e.message),
    )
    new HttpLimiter({ limits: '2/minute', key: 'apiKey', redisUrl, apiKeys: { allow: ['k'], keySecret: KEY_SECRET } })
    new HttpLimiter({ limits: '2/minute', key: 'apiKey', redisUrl, apiKeys: { signingSecret: SIGNING } })
  } finally {
    if (saved !== undefined) process.env.FLOODWALL_KEY_SECRET = saved
  }
})

test('JWT: a future iat is refused, exp can be required', async () => {
  const now = Math.floor(Date.now() / 1000)
  const keyOf = async (h, claims) =>
    (
      await h.decide(
        'GET',
        '/',
        undefined,
        '127.0.0.1',
        null,
        `Bearer ${sign({ sub: 'alice', ...claims }, { secret: SECRET })}`,
      )
    ).key
  const plain = new HttpLimiter({ limits: '100/minute', key: 'user', jwt: { secret: SECRET } })
  const strict = new HttpLimiter({ limits: '100/minute', key: 'user', jwt: { secret: SECRET, requireExp: true } })
  assert.equal(await keyOf(plain, { iat: now }), 'user:alice')
  assert.equal(await keyOf(plain, { iat: now + 600 }), 'ip:127.0.0.1')
  assert.equal(await keyOf(plain, {}), 'user:alice')
  assert.equal(await keyOf(strict, {}), 'ip:127.0.0.1')
  assert.equal(await keyOf(strict, { exp: now + 60 }), 'user:alice')
  assert.throws(
    () => new HttpLimiter({ limits: '1/minute', key: 'user', jwt: { secret: 'dev-secret-change-me' } }),
    (e) => e.code === 'ERR_FLOODWALL_CONFIG' && /at least 32 bytes/.test(e.message) && !/dev-secret/.test(e.message),
  )
})
