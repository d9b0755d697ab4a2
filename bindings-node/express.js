// floodwall/express: rate limiting middleware for Express 4 and 5. The rules (client IP behind
// trusted proxies, verified JWT users, keys, route rules, headers, 429 body) run in the core via
// HttpLimiter; this file only reads the request, writes the response and reports problems. It also
// passes the request's trace context, so the core's `floodwall.check` spans are children of the app's.
'use strict'

const { HttpLimiter } = require('./native.js')

// Options read here; every other option goes to HttpLimiter, which refuses the ones it does not know.
const JS_OPTIONS = ['skip', 'logger', 'handler', 'apiKeyHeader', 'onStoreError', 'trustTraceparent']
// How often a continuing store outage is logged again.
const STORE_WARN_INTERVAL_MS = 30_000
// A shadow rule's would-be denials are logged at most this often per rule (the first at once).
const SHADOW_LOG_INTERVAL_MS = 60_000

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
    for (const r of options.rules) visit(r, r?.name)
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

// @opentelemetry/api, if the app has it (an optional peer dependency): undefined until first looked
// for, null when absent. Its global state is shared across copies, so this sees the app's context.
let otelApi

function loadOtel() {
  if (otelApi === undefined) {
    try {
      otelApi = require('@opentelemetry/api')
    } catch {
      otelApi = null
    }
  }
  return otelApi
}

/**
 * The W3C traceparent of the active span: what the app's propagator injects, or, when no
 * propagator is registered, the active span's own context. Without an active span, and only when
 * the app trusts it (`trustTraceparent`): the incoming request's traceparent header. A client's
 * header is not trusted by default: a sampled parent is always followed, so any client could
 * otherwise force sampling.
 */
function traceparentOf(req, trustHeader) {
  const api = loadOtel()
  if (api) {
    const active = api.context.active()
    const carrier = {}
    api.propagation.inject(active, carrier)
    if (typeof carrier.traceparent === 'string') return carrier.traceparent
    const sc = api.trace.getSpanContext(active)
    if (sc && api.isSpanContextValid(sc)) {
      return `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & 0xff).toString(16).padStart(2, '0')}`
    }
  }
  return trustHeader ? header(req.headers.traceparent) : undefined
}

// A key function's answer as the core takes it: undefined/null stays missing (the core keys that
// request by its client IP and reports it), anything else as a string.
function appKey(key) {
  return key === undefined || key === null ? undefined : String(key)
}

// The peer a unix-domain socket gives: no address (remoteAddress is undefined), and the server
// listens on a path. The core trusts it as a proxy only with `trustUnixSocket`.
function peerOf(req) {
  const socket = req.socket
  if (!socket) return ''
  if (socket.remoteAddress) return socket.remoteAddress
  const server = socket.server
  const addr = server && typeof server.address === 'function' ? server.address() : null
  return typeof addr === 'string' ? 'unix:' : ''
}

// The template of the route the app will run for this request, found before the router gets there
// (app-level middleware runs first, so req.route is not set yet): the first route layer of the
// app's router, or of a router mounted on a fixed prefix (`app.use('/api', router)`), that matches
// the path and handles the method. A prefix with parameters is not searched (its key would carry
// the client's values), nor is a mounted sub-app; their requests fall back to a rule's pattern or
// the normalised path in the core.
function routeOf(req) {
  if (req.route && typeof req.route.path === 'string') return (req.baseUrl || '') + req.route.path
  const app = req.app
  if (!app || (app.mountpath !== undefined && app.mountpath !== '/')) return undefined
  let stack
  try {
    stack = (app.router ?? app._router)?.stack // Express 5 : Express 4 (which throws on app.router)
  } catch {
    stack = app._router?.stack
  }
  const url = req.originalUrl || req.url || '/'
  const q = url.indexOf('?')
  const path = q === -1 ? url : url.slice(0, q)
  const method = req.method === 'HEAD' ? 'get' : String(req.method).toLowerCase()
  return findRoute(stack, path, method, 0)
}

// Routers nest a few levels in real apps; the bound keeps a pathological tree from costing more.
const MAX_ROUTER_DEPTH = 8

function findRoute(stack, path, method, depth) {
  if (!Array.isArray(stack)) return undefined
  for (const layer of stack) {
    try {
      const route = layer.route
      if (route) {
        // Layer.match sets the layer's params and path; the router sets them again before use.
        const handles = route._handlesMethod ?? route._handles_method // Express 5 : Express 4
        if (typeof route.path === 'string' && typeof handles === 'function' && layer.match(path)) {
          if (handles.call(route, method)) return route.path
        }
        continue
      }
      const inner = layer.handle?.stack
      if (depth >= MAX_ROUTER_DEPTH || !Array.isArray(inner)) continue
      // Express 5's router returns the match ({ path, keys }); Express 4's sets them on the layer.
      const m = layer.match(path)
      if (!m) continue
      const { path: matched, keys } = typeof m === 'object' ? m : layer
      if (keys?.length) continue
      // The prefix as the client spelled it ('/API' under case-insensitive routing): lower case,
      // as the core normalises Express paths, so spellings share the template.
      const prefix = String(matched || '').replace(/\/+$/, '')
      const rest = path.slice(prefix.length).replace(/^\/*/, '/')
      const found = findRoute(inner, rest, method, depth + 1)
      if (found !== undefined) return prefix.toLowerCase() + found
    } catch {
      // A malformed escape makes Express answer 400 itself; the core's normalised path will do.
    }
  }
  return undefined
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
  const trustTraceparent = options.trustTraceparent ?? false
  if (typeof trustTraceparent !== 'boolean') {
    throw configError(`invalid trustTraceparent ${JSON.stringify(trustTraceparent)}: must be a boolean`)
  }
  const logger = options.logger ?? console
  const apiKeyHeader = (options.apiKeyHeader ?? 'x-api-key').toLowerCase()
  requireFunction('skip', skip)
  requireFunction('handler', handler)
  requireFunction('onStoreError', onStoreError)
  if (typeof logger.warn !== 'function') throw configError('invalid logger: must have a warn(message) method')
  const keyFn = typeof options.key === 'function' ? options.key : null
  // HttpLimiter checks that it is a function; only JavaScript can call it.
  const verify = typeof options.apiKeys?.verify === 'function' ? options.apiKeys.verify : null

  const engine = new HttpLimiter(native)
  warnOnSharedNames(options, logger)
  const forwardedHeader = engine.forwardedHeader
  const forwardedName = forwardedHeader === 'forwarded' ? 'Forwarded' : 'X-Forwarded-For'
  const needsRoute = engine.needsRoute

  let warnedForwarded = false
  let warnedKey = false
  let warnedVerify = false

  // The app's answer about an API key: an identity string, true, or false. A verify function that
  // throws or answers something else leaves the key unverified (keyed by IP), never a 500.
  async function verdictFor(apiKey) {
    let out
    try {
      out = await verify(apiKey)
    } catch (err) {
      warnVerify(`threw: ${err?.message ?? err}`)
      return false
    }
    if (typeof out === 'string' || typeof out === 'boolean') return out
    if (out === null || out === undefined) return false
    warnVerify(`returned ${typeof out}; expected an identity string, true, false or null`)
    return false
  }

  function warnVerify(what) {
    if (warnedVerify) return
    warnedVerify = true
    logger.warn(`floodwall: apiKeys.verify ${what}; the key was treated as unverified. (Logged once.)`)
  }
  let lastStoreWarning = 0
  let unreported = 0

  // A shadow rule would have denied: said at info (or debug) level, the first time at once and
  // then at most once a minute per rule with the count since, so that a rule set too low does not
  // flood the log. Metrics count every one. A logger without info or debug is not told.
  const shadowLog = new Map()
  const info = typeof logger.info === 'function' ? logger.info : logger.debug
  function reportShadow(rule) {
    const now = Date.now()
    const seen = shadowLog.get(rule)
    const since = (seen?.since ?? 0) + 1
    if (seen && now - seen.last < SHADOW_LOG_INTERVAL_MS) {
      seen.since = since
      return
    }
    shadowLog.set(rule, { last: now, since: 0 })
    if (typeof info === 'function') {
      info.call(
        logger,
        `floodwall: shadow rule "${rule}" would have denied ${since} request(s) since its last report; not enforced`,
      )
    }
  }

  // Redis could not answer for some rule. The core's `fallback` policy (default 'local') has
  // already decided those rules (their decisions say source 'fallback'); with fallback 'error' the
  // failures arrive here instead and the request is let through: never a 500 by accident.
  function storeFailed(d, req, failures) {
    const viaFallback = d ? d.fallbackRules : []
    const parts = failures.map((f) => `rule "${f.rule}": ${f.message} (request allowed)`)
    if (viaFallback.length)
      parts.unshift(`rules ${viaFallback.map((r) => `"${r}"`).join(', ')} decided by the fallback policy`)
    const err = new Error(`floodwall: Redis is unavailable; ${parts.join('; ')}`)
    err.code = 'ERR_FLOODWALL_STORE'
    err.rules = [...viaFallback, ...failures.map((f) => f.rule)]
    if (onStoreError) return onStoreError(err, req)
    const now = Date.now()
    if (now - lastStoreWarning < STORE_WARN_INTERVAL_MS) {
      unreported += 1
      return
    }
    const more = unreported ? ` (${unreported} more requests since the last warning)` : ''
    lastStoreWarning = now
    unreported = 0
    logger.warn(err.message + more)
  }

  return async function floodwallRateLimit(req, res, next) {
    let request
    try {
      if (skip && (await skip(req, res))) return next()
      const headers = req.headers
      const route = needsRoute ? routeOf(req) : undefined
      const apiKey = header(headers[apiKeyHeader])
      const path = req.originalUrl || req.url
      const verdict =
        verify && apiKey?.trim() && engine.wantsApiKeyVerdict(req.method, path)
          ? await verdictFor(apiKey.trim())
          : undefined
      request = [
        req.method,
        path,
        route,
        peerOf(req),
        header(headers[forwardedHeader]),
        header(headers.authorization),
        apiKey,
        keyFn ? appKey(await keyFn(req, res)) : undefined,
        traceparentOf(req, trustTraceparent),
        verdict,
      ]
    } catch (err) {
      return next(err) // the app's own skip or key function failed
    }
    let d
    try {
      d = await engine.decide(...request)
    } catch (err) {
      if (err && err.code === 'ERR_FLOODWALL_CONFIG') return next(err)
      // Never a 500 by accident: anything else from floodwall lets the request through.
      storeFailed(null, req, [{ rule: '*', message: String(err?.message) }])
      return next()
    }
    req.rateLimit = d
    if (d.forwardedForIgnored && !warnedForwarded) {
      warnedForwarded = true
      logger.warn(
        `floodwall: ${forwardedName} arrived from ${request[3] || 'an unknown peer'}, which is not a trusted proxy, and was ignored: ` +
          'clients are keyed by the socket address. If this app runs behind a proxy, list it in `trustedProxies`. ' +
          '(Logged once.)',
      )
    }
    if (d.keyErrors.length && !warnedKey) {
      warnedKey = true
      const { rule, message } = d.keyErrors[0]
      ;(typeof logger.error === 'function' ? logger.error : logger.warn).call(
        logger,
        `floodwall: rule "${rule}": ${message}; such requests are keyed by their client IP instead. (Logged once.)`,
      )
    }
    if (d.storeErrors.length || d.fallbackRules.length) {
      storeFailed(d, req, d.storeErrors)
    }
    for (const rule of d.shadowDenied) reportShadow(rule)
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
