// Test harness: private redis-servers on free loopback ports (never the shared one on 6379),
// stopped when the test file ends, and small HTTP helpers for Express servers on loopback.
'use strict'

const { spawn } = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')
const { setTimeout: delay } = require('node:timers/promises')

const children = new Set()
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL')
})

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

/** One command over a fresh connection; resolves with the raw reply text. */
function redisCommand(port, ...args) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1')
    let buf = ''
    sock.setTimeout(5000, () => sock.destroy(new Error('redis command timed out')))
    sock.on('connect', () => {
      let req = `*${args.length}\r\n`
      for (const a of args) req += `$${Buffer.byteLength(String(a))}\r\n${a}\r\n`
      sock.write(req)
    })
    sock.on('data', (d) => {
      buf += d
      if (buf.endsWith('\r\n')) {
        sock.end()
        resolve(buf)
      }
    })
    sock.on('error', reject)
  })
}

class RedisServer {
  constructor(port, dir) {
    this.port = port
    this.dir = dir
    this.url = `redis://127.0.0.1:${port}`
    this.child = null
  }

  static async start() {
    for (let attempt = 0; attempt < 5; attempt++) {
      const port = await freePort()
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'floodwall-node-redis-'))
      const server = new RedisServer(port, dir)
      if (await server.spawn()) return server
    }
    throw new Error('could not start redis-server (is it installed?)')
  }

  async spawn() {
    const child = spawn(
      'redis-server',
      ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', this.dir],
      { stdio: 'ignore' },
    )
    this.child = child
    children.add(child)
    let exited = false
    child.once('exit', () => {
      exited = true
      children.delete(child)
    })
    // Poll for readiness: the server is up when it answers PING.
    const deadline = Date.now() + 10_000
    while (Date.now() < deadline && !exited) {
      try {
        if ((await redisCommand(this.port, 'PING')).startsWith('+PONG')) return true
      } catch {
        // not listening yet
      }
      await delay(20)
    }
    this.kill()
    return false
  }

  /** Kill the process as an outage would; resolves once it has exited. */
  kill() {
    const child = this.child
    this.child = null
    if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
    return new Promise((resolve) => {
      child.once('exit', () => resolve())
      child.kill('SIGKILL')
    })
  }

  async stop() {
    await this.kill()
    fs.rmSync(this.dir, { recursive: true, force: true })
  }

  command(...args) {
    return redisCommand(this.port, ...args)
  }
}

let unique = 0
function uniquePrefix(tag) {
  unique += 1
  return `fwtest-${tag}-${process.pid}-${unique}`
}

/** Listen on a free loopback port; resolves with { server, base, close }. */
function listen(app) {
  return new Promise((resolve, reject) => {
    const server = app.listen(0, '127.0.0.1')
    server.once('error', reject)
    server.once('listening', () => {
      const { port } = server.address()
      resolve({
        server,
        base: `http://127.0.0.1:${port}`,
        close: () =>
          new Promise((r) => {
            server.closeAllConnections?.()
            server.close(() => r())
          }),
      })
    })
  })
}

/** A logger that records what it is told. */
function recordingLogger() {
  const lines = []
  return { lines, warn: (m) => lines.push(String(m)) }
}

/** Asserts that `fn` throws a config Error (code ERR_FLOODWALL_CONFIG) whose message matches `pattern`. */
function throwsConfig(fn, pattern) {
  const assert = require('node:assert/strict')
  assert.throws(fn, (e) => {
    assert.ok(e instanceof Error)
    assert.equal(e.code, 'ERR_FLOODWALL_CONFIG')
    assert.match(e.message, pattern)
    return true
  })
}

module.exports = { RedisServer, freePort, uniquePrefix, listen, recordingLogger, throwsConfig }
