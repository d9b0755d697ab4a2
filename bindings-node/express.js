// floodwall/express: rate limiting middleware for Express 4 and 5. The rules (client IP behind
// trusted proxies, verified JWT users, keys, route rules, headers, 429 body) run in the core via
// HttpLimiter; this file only reads the request, writes the response and reports problems.
'use strict'

const { HttpLimiter } = require('./native.js')

// Options read here; every other option goes to HttpLimiter, which refuses the ones it does not know.
const JS_OPTIONS = ['skip', 'logger', 'handler', 'apiKeyHeader', 'onStoreError']
// How often a continuing store outage is logged again.
const STORE_WARN_INTERVAL_MS = 30_000

function configError(message) {
  const err = new Error(message)
  err.code = 'ERR_FLOODWALL_CONFIG'
  return err
}

function requireFunction(name, value) {
  if (value !== undefined && typeof value !== 'function') {
    throw configError(`invalid ${name} ${typeof value}: must be a function`)
  }
}

// Two middlewares that build their own limiters with the same name on the same Redis share keys
// (and so counts). That is rarely meant; a shared `limiter` is the way to share on purpose.
const namesInUse = new Set()

function warnOnSharedNames(options, logger) {
  const seen = []
  const visit = (o, name) => {
    if (o && typeof o.redisUrl === 'string' && o.limits !== undefined) {
      seen.push(`${o.redisUrl}|${o.prefix ?? 'floodwall'}|${name}`)
    }
  }
  visit(options, options.name ?? 'default')
  if (Array.isArray(options.rules)) {
    for (const r of options.rules) visit(r, r && r.name)
  }
  for (const id of seen) {
    if (namesInUse.has(id)) {
      const name = id.split('|').pop()
      logger.warn(
        `floodwall: two rateLimit() middlewares use the name "${name}" on the same Redis; they share counts. ` +
          'Give each a distinct `name`, or pass one shared `limiter` if sharing is intended.',
      )
    }
    namesInUse.add(id)
  }
}

function header(value) {
  if (value === undefined) return undefined
  return Array.isArray(value) ? value.join(',') : String(value)
}

/**
 * @param {import('./express').RateLimitOptions} options
 * @returns {import('express').RequestHandler}
 */
function rateLimit(options) {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw configError(`invalid rateLimit options ${options === null ? 'null' : typeof options}: must be an object`)
  }
  const native = {}
  for (const [k, v] of Object.entries(options)) {
    if (!JS_OPTIONS.includes(k)) native[k] = v
  }
  const { skip, handler, onStoreError } = options
  const logger = options.logger ?? console
  const apiKeyHeader = (options.apiKeyHeader ?? 'x-api-key').toLowerCase()
  requireFunction('skip', skip)
  requireFunction('handler', handler)
  requireFunction('onStoreError', onStoreError)
  if (typeof logger.warn !== 'function') throw configError('invalid logger: must have a warn(message) method')
  const keyFn = typeof options.key === 'function' ? options.key : null

  const engine = new HttpLimiter(native)
  warnOnSharedNames(options, logger)

  let warnedForwarded = false
  let lastStoreWarning = 0
  let unreported = 0

  // The seam for the fallback policy (issue: fallback): today a store failure allows the request
  // and is logged; the policy will decide here instead.
  function storeFailed(failures, req) {
    const err = new Error(failures.map((f) => `rule "${f.rule}": ${f.message}`).join('; '))
    err.code = 'ERR_FLOODWALL_STORE'
    err.rules = failures.map((f) => f.rule)
    if (onStoreError) return onStoreError(err, req)
    const now = Date.now()
    if (now - lastStoreWarning < STORE_WARN_INTERVAL_MS) {
      unreported += 1
      return
    }
    const more = unreported ? ` (and ${unreported} more since the last warning)` : ''
    lastStoreWarning = now
    unreported = 0
    logger.warn(`floodwall: the store failed, so the request was allowed without a limit${more}: ${err.message}`)
  }

  return async function floodwallRateLimit(req, res, next) {
    let request
    try {
      if (skip && (await skip(req, res))) return next()
      const headers = req.headers
      const route = req.route && typeof req.route.path === 'string' ? (req.baseUrl || '') + req.route.path : undefined
      request = {
        method: req.method,
        path: req.originalUrl || req.url,
        route,
        peer: (req.socket && req.socket.remoteAddress) || '',
        forwardedFor: header(headers['x-forwarded-for']),
        authorization: header(headers.authorization),
        apiKey: header(headers[apiKeyHeader]),
        key: keyFn ? String(await keyFn(req, res)) : undefined,
      }
    } catch (err) {
      return next(err) // the app's own skip or key function failed
    }
    let d
    try {
      d = await engine.decide(request)
    } catch (err) {
      if (err && err.code === 'ERR_FLOODWALL_CONFIG') return next(err)
      // Never a 500 by accident: anything else from floodwall lets the request through.
      storeFailed([{ rule: '*', message: String(err && err.message) }], req)
      return next()
    }
    req.rateLimit = d
    if (d.forwardedForIgnored && !warnedForwarded) {
      warnedForwarded = true
      logger.warn(
        `floodwall: X-Forwarded-For arrived from ${request.peer}, which is not a trusted proxy, and was ignored: ` +
          'clients are keyed by the socket address. If this app runs behind a proxy, list it in `trustedProxies`. ' +
          '(Logged once.)',
      )
    }
    if (d.storeErrors.length) storeFailed(d.storeErrors, req)
    if (!res.headersSent) {
      const h = d.headers
      for (let i = 0; i < h.length; i += 2) res.setHeader(h[i], h[i + 1])
    }
    if (d.allowed) return next()
    if (handler) {
      try {
        return await handler(req, res, next, d)
      } catch (err) {
        return next(err)
      }
    }
    res.statusCode = 429
    res.setHeader('Content-Type', 'application/json; charset=utf-8')
    res.end(d.body)
  }
}

module.exports = { rateLimit }
