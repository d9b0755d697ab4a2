// Python and Node on one Redis, one key, one limit: together they admit exactly the limit, since
// both bindings run the core's key layout and scripts. Needs /work/main/.venv (made by the Python
// binding's test.sh); skipped with a message otherwise.
'use strict'

const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { spawn, spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const readline = require('node:readline')
const { Limiter } = require('..')
const { RedisServer, uniquePrefix } = require('./helpers')

const PYTHON = process.env.FLOODWALL_PYTHON || path.join(__dirname, '..', '..', '.venv', 'bin', 'python')

function pythonProblem() {
  if (!fs.existsSync(PYTHON)) return `${PYTHON} does not exist (run bindings-python/test.sh first)`
  const r = spawnSync(PYTHON, ['-c', 'import floodwall'], { encoding: 'utf8' })
  if (r.status !== 0) return `${PYTHON} cannot import floodwall: ${(r.stderr || '').trim().split('\n').pop()}`
  return null
}

const problem = pythonProblem()
if (problem) console.log(`# SKIP cross-language test: ${problem}`)

// Waits for "go" on stdin, fires its checks at once, prints how many were allowed.
const SCRIPT = `
import asyncio, sys
from floodwall import Limiter
url, limit, prefix, key, n = sys.argv[1:6]
async def main():
    limiter = Limiter([limit], redis_url=url, prefix=prefix, fallback="error", timeout_ms=10_000,
                      breaker={"slow_call_ms": 10_000})
    await limiter.peek("warm-up")
    print("ready", flush=True)
    sys.stdin.readline()
    ds = await asyncio.gather(*[limiter.check(key) for _ in range(int(n))])
    print(sum(1 for d in ds if d.allowed), flush=True)
asyncio.run(main())
`

let redis
before(async () => {
  if (!problem) redis = await RedisServer.start()
})
after(async () => {
  await redis?.stop()
})

test('a Python and a Node limiter on one key admit exactly the limit together', {
  skip: problem ?? false,
}, async (t) => {
  const prefix = uniquePrefix('xlang')
  const limit = '150/hour'
  const py = spawn(PYTHON, ['-c', SCRIPT, redis.url, limit, prefix, 'shared', '200'], {
    stdio: ['pipe', 'pipe', 'inherit'],
  })
  const lines = readline.createInterface({ input: py.stdout })[Symbol.asyncIterator]()
  const exited = new Promise((resolve) => py.once('exit', resolve))
  try {
    assert.equal((await lines.next()).value, 'ready')
    // exact on both sides: no deadline, breaker or fallback of a loaded machine's making
    const node = new Limiter({
      limits: limit,
      redisUrl: redis.url,
      prefix,
      fallback: 'error',
      timeoutMs: 10_000,
      breaker: { slowCallMs: 10_000 },
    })
    await node.peek('warm-up')
    py.stdin.write('go\n')
    const ds = await Promise.all(Array.from({ length: 200 }, () => node.check('shared')))
    const nodeAllowed = ds.filter((d) => d.allowed).length
    const pyAllowed = Number((await lines.next()).value)
    t.diagnostic(`admitted: node ${nodeAllowed}, python ${pyAllowed}`)
    assert.equal(nodeAllowed + pyAllowed, 150, `node ${nodeAllowed} + python ${pyAllowed}`)
    // Each side sees the other's counts afterwards.
    assert.equal((await node.peek('shared')).remaining, 0)
  } finally {
    py.kill()
    await exited
  }
})
