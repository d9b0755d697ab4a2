'use strict'
// The clusterNodes option from Node: a real six-process Redis Cluster (3 masters, 3 replicas).

const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { spawn, execFileSync } = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')
const { setTimeout: delay } = require('node:timers/promises')
const { Limiter } = require('..')
const { uniquePrefix } = require('./helpers')

function bindable(port) {
  return new Promise((resolve) => {
    const s = net.createServer()
    s.once('error', () => resolve(false))
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)))
  })
}

/** A free port whose cluster bus port (+10000) is free too. */
async function clusterPort() {
  for (;;) {
    const port = await new Promise((resolve) => {
      const s = net.createServer()
      s.listen(0, '127.0.0.1', () => {
        const p = s.address().port
        s.close(() => resolve(p))
      })
    })
    if (port < 55000 && (await bindable(port + 10000))) return port
  }
}

const cli = (...args) => execFileSync('redis-cli', args, { encoding: 'utf8' })
const children = []
let root
let seeds

before(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'floodwall-node-cluster-'))
  const ports = []
  for (let i = 0; i < 6; i++) {
    const port = await clusterPort()
    const dir = path.join(root, String(i))
    fs.mkdirSync(dir)
    children.push(
      spawn(
        'redis-server',
        [
          '--port',
          String(port),
          '--bind',
          '127.0.0.1',
          '--save',
          '',
          '--appendonly',
          'no',
          '--dir',
          dir,
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          'nodes.conf',
          '--cluster-node-timeout',
          '1000',
        ],
        { stdio: 'ignore' },
      ),
    )
    ports.push(port)
  }
  const deadline = Date.now() + 20_000
  for (const p of ports) {
    // readiness poll, bounded by the deadline
    while (
      !(() => {
        try {
          return cli('-p', String(p), 'ping').startsWith('PONG')
        } catch {
          return false
        }
      })()
    ) {
      assert.ok(Date.now() < deadline, 'cluster nodes did not start')
      await delay(20)
    }
  }
  cli('--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '1', '--cluster-yes')
  while (!ports.every((p) => cli('-p', String(p), 'cluster', 'info').includes('cluster_state:ok'))) {
    assert.ok(Date.now() < deadline, 'cluster did not reach cluster_state:ok')
    await delay(50)
  }
  seeds = ports.map((p) => `redis://127.0.0.1:${p}`)
})

after(() => {
  for (const c of children) c.kill('SIGKILL')
  if (root) fs.rmSync(root, { recursive: true, force: true })
})

test('limits hold on a Redis Cluster, several windows in one call', async () => {
  const limiter = new Limiter({
    limits: ['2/minute', '5/second'],
    clusterNodes: seeds,
    prefix: uniquePrefix('cluster'),
    fallback: 'error',
    timeoutMs: 5000,
  })
  const decisions = []
  for (let i = 0; i < 3; i++) decisions.push(await limiter.check('user:1'))
  assert.deepEqual(
    decisions.map((d) => d.allowed),
    [true, true, false],
  )
  assert.ok(decisions.every((d) => d.source === 'redis'))
  assert.equal(decisions[2].limitedBy, '2/minute')
  // identities spread over the three masters; each is counted on its own
  const spread = await Promise.all(Array.from({ length: 30 }, (_, i) => limiter.check(`spread:${i}`)))
  assert.ok(spread.every((d) => d.allowed))
})

test('a bad cluster seed is a config error naming it', () => {
  assert.throws(
    () => new Limiter({ limits: '2/minute', clusterNodes: ['http://nope:7000'] }),
    (e) => e.code === 'ERR_FLOODWALL_CONFIG' && e.message.includes('http://nope'),
  )
})
