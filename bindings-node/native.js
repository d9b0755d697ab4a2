// Loads the addon built for this platform (`napi build --platform` names it floodwall.<triple>.node).
'use strict'

const { existsSync } = require('node:fs')
const { join } = require('node:path')

function triple() {
  const { platform, arch } = process
  if (platform === 'linux') {
    const report = typeof process.report?.getReport === 'function' ? process.report.getReport() : null
    const glibc = report?.header?.glibcVersionRuntime
    return `linux-${arch}-${glibc ? 'gnu' : 'musl'}`
  }
  if (platform === 'win32') return `win32-${arch}-msvc`
  return `${platform}-${arch}`
}

const file = join(__dirname, `floodwall.${triple()}.node`)
if (!existsSync(file)) {
  const err = new Error(
    `floodwall: no native addon for this platform (${triple()}): expected ${file}. ` +
      'Build it from source with `npm run build` in the package directory.',
  )
  err.code = 'ERR_FLOODWALL_NO_ADDON'
  throw err
}
module.exports = require(file)
