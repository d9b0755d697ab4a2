// floodwall for Node: the native addon (Rust, napi-rs) re-exported as is. Limiter.check/peek/reset
// return Promises; errors are Errors with `code` ERR_FLOODWALL_CONFIG / ERR_FLOODWALL_STORE.
'use strict'

const native = require('./native.js')

module.exports = {
  Limiter: native.Limiter,
  ManualClock: native.ManualClock,
  HttpLimiter: native.HttpLimiter,
}
