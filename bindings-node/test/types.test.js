// index.d.ts and express.d.ts type-check against the way the README uses the package.
'use strict'

const { test } = require('node:test')
const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

test('the .d.ts files describe the API (tsc --strict)', () => {
  const pkg = path.join(__dirname, '..')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'floodwall-types-'))
  try {
    // Resolve 'floodwall' to this package the way an installed copy would be.
    fs.mkdirSync(path.join(dir, 'node_modules'))
    fs.symlinkSync(pkg, path.join(dir, 'node_modules', 'floodwall'))
    fs.symlinkSync(path.join(pkg, 'node_modules', 'express'), path.join(dir, 'node_modules', 'express'))
    fs.symlinkSync(path.join(pkg, 'node_modules', '@types'), path.join(dir, 'node_modules', '@types'))
    fs.symlinkSync(path.join(pkg, 'node_modules', 'prom-client'), path.join(dir, 'node_modules', 'prom-client'))
    fs.copyFileSync(path.join(__dirname, 'types-check.ts'), path.join(dir, 'check.ts'))
    const tsc = path.join(pkg, 'node_modules', 'typescript', 'bin', 'tsc')
    execFileSync(
      process.execPath,
      [
        tsc,
        '--noEmit',
        '--strict',
        '--module',
        'nodenext',
        '--moduleResolution',
        'nodenext',
        '--target',
        'es2022',
        '--esModuleInterop',
        '--skipLibCheck',
        'false',
        'check.ts',
      ],
      { cwd: dir, encoding: 'utf8', stdio: 'pipe' },
    )
  } catch (e) {
    throw new Error(`tsc failed:\n${e.stdout || ''}${e.stderr || ''}`)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})
