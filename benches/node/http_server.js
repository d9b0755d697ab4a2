// One Express app for the HTTP benchmark, limited by floodwall/express, by express-rate-limit +
// rate-limit-redis (over ioredis), or not at all. Started by bench.js: argv = variant, redis URL.
'use strict'

const path = require('node:path')
const { createRequire } = require('node:module')

const PKG = path.join(__dirname, '..', '..', 'bindings-node')
const requireDev = createRequire(path.join(PKG, 'package.json'))
const express = requireDev('express')

const [variant, redisUrl] = process.argv.slice(2)
const app = express()
app.disable('etag')

// Limits far above the load: every request is counted and allowed.
if (variant === 'floodwall') {
  const { rateLimit } = require(path.join(PKG, 'express.js'))
  // As in bench.js: a deadline and breaker threshold that keep every decision on Redis.
  app.use(
    rateLimit({
      limits: '100000000/minute',
      redisUrl,
      prefix: 'bench-http-fw',
      headers: 'draft-10',
      timeoutMs: 1000,
      breaker: { slowCallMs: 1000 },
      onStoreError: () => process.stdout.write('WARNING: floodwall fell back\n'),
    }),
  )
} else if (variant === 'express-rate-limit') {
  const { rateLimit } = requireDev('express-rate-limit')
  const { RedisStore } = requireDev('rate-limit-redis')
  const Redis = requireDev('ioredis')
  const client = new Redis(redisUrl)
  app.use(
    rateLimit({
      windowMs: 60_000,
      limit: 100_000_000,
      standardHeaders: 'draft-8',
      legacyHeaders: false,
      store: new RedisStore({
        prefix: 'bench-http-erl:',
        sendCommand: (command, ...args) => client.call(command, ...args),
      }),
    }),
  )
} else if (variant !== 'none') {
  throw new Error(`unknown variant ${variant}`)
}

app.get('/', (_req, res) => res.json({ ok: true }))

const server = app.listen(0, '127.0.0.1', () => process.send({ port: server.address().port }))
