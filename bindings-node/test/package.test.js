// The package as users get it: `npm pack`'s tarball and `npm install <dir>` each install into a
// fresh directory where require, import, the express entry and the types all resolve.
'use strict'

const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const PKG = path.join(__dirname, '..')
let work

before(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'floodwall-pack-'))
})
after(() => {
  fs.rmSync(work, { recursive: true, force: true })
})

const npm = (args, cwd) =>
  execFileSync('npm', [...args, '--no-audit', '--no-fund', '--loglevel=error'], { cwd, encoding: 'utf8' })

const CJS = `
const { Limiter, ManualClock, telemetry } = require('floodwall')
const { rateLimit } = require('floodwall/express')
const l = new Limiter({ limits: '2/second', clock: new ManualClock(0) })
l.check('k').then((d) => console.log(JSON.stringify({ cjs: d.remaining, mw: typeof rateLimit({ limits: '1/second' }), tel: typeof telemetry.registerMetrics })))
`
const ESM = `
import { Limiter } from 'floodwall'
import floodwall from 'floodwall'
import { rateLimit } from 'floodwall/express'
const d = await new Limiter({ limits: ['5/second', '100/minute'] }).check('k')
console.log(JSON.stringify({ esm: d.remaining, same: floodwall.Limiter === Limiter, mw: typeof rateLimit }))
`

function tryInstall(spec, name) {
  const dir = path.join(work, name)
  fs.mkdirSync(dir)
  fs.writeFileSync(
    path.join(dir, 'package.json'),
    JSON.stringify({ name: `consumer-${name}`, version: '1.0.0', private: true }),
  )
  npm(['install', spec], dir)
  fs.writeFileSync(path.join(dir, 'a.cjs'), CJS)
  fs.writeFileSync(path.join(dir, 'b.mjs'), ESM)
  const run = (f) => JSON.parse(execFileSync(process.execPath, [f], { cwd: dir, encoding: 'utf8' }).trim())
  assert.deepEqual(run('a.cjs'), { cjs: 1, mw: 'function', tel: 'function' })
  assert.deepEqual(run('b.mjs'), { esm: 4, same: true, mw: 'function' })
  const installed = path.join(dir, 'node_modules', 'floodwall')
  for (const f of ['index.d.ts', 'express.d.ts']) assert.ok(fs.existsSync(path.join(installed, f)), f)
  return installed
}

test('the npm pack tarball installs and works, with the addon for this platform inside', () => {
  const out = npm(['pack', '--pack-destination', work], PKG).trim().split('\n').pop()
  const tarball = path.join(work, out)
  const installed = tryInstall(tarball, 'tarball')
  assert.ok(
    fs.readdirSync(installed).some((f) => /^floodwall\..+\.node$/.test(f)),
    'the .node file is in the tarball',
  )
  assert.ok(!fs.existsSync(path.join(installed, 'src')), 'no Rust sources in the tarball')
  assert.ok(!fs.existsSync(path.join(installed, 'test')), 'no tests in the tarball')
})

test('npm install <path to bindings-node> installs and works', () => {
  tryInstall(PKG, 'path')
})
