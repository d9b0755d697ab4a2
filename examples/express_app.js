// An Express app limited by floodwall: an app-wide limit per user (verified JWT, else client IP),
// a stricter rule on POST /login, and a per-route limit keyed by user and endpoint. Runs on the
// embedded store, or on Redis when FLOODWALL_REDIS_URL is set. With FLOODWALL_OTLP_ENDPOINT set,
// floodwall exports a span per decision there, as a child of this app's request span when the
// OpenTelemetry SDK is installed; with prom-client installed, /metrics serves floodwall's metrics.
//
//   (cd bindings-node && npm ci && npm run build)
//   node examples/express_app.js            # or FLOODWALL_REDIS_URL=redis://127.0.0.1:6379 node ...
//   HOST=0.0.0.0 to listen on every interface (in a container); PORT (default 3000).
//   JWT_SECRET (at least 32 bytes) verifies user tokens; without it a random one is made for this
//   process only, and the app says so.
'use strict'

const path = require('node:path')

// From an installed package, or straight from this repository.
function load(name, fromRepo) {
  try {
    return require(name)
  } catch {
    return require(path.join(__dirname, '..', 'bindings-node', fromRepo))
  }
}
/** An optional package, or null when it is not installed. */
function optional(name, fromRepo) {
  try {
    return load(name, fromRepo)
  } catch {
    return null
  }
}
const express = load('express', 'node_modules/express')
const { rateLimit } = load('floodwall/express', 'express.js')
const { telemetry } = load('floodwall', 'index.js')

const redisUrl = process.env.FLOODWALL_REDIS_URL || undefined
const otlpEndpoint = process.env.FLOODWALL_OTLP_ENDPOINT || undefined
const serviceName = process.env.OTEL_SERVICE_NAME || 'express-demo'
const host = process.env.HOST || '127.0.0.1'
const port = Number(process.env.PORT || 3000)

// The app's own traces (the OpenTelemetry SDK, if installed): a span per request, exported to the
// same collector. floodwall's spans become its children: the middleware passes the active context.
let tracer = null
let api = null
if (otlpEndpoint) {
  telemetry.configureTracing({ otlpEndpoint, serviceName })
  api = optional('@opentelemetry/api', 'node_modules/@opentelemetry/api')
  const sdk = optional('@opentelemetry/sdk-trace-node', 'node_modules/@opentelemetry/sdk-trace-node')
  const otlp = optional(
    '@opentelemetry/exporter-trace-otlp-http',
    'node_modules/@opentelemetry/exporter-trace-otlp-http',
  )
  if (api && sdk && otlp) {
    const resources = optional('@opentelemetry/resources', 'node_modules/@opentelemetry/resources')
    const provider = new sdk.NodeTracerProvider({
      ...(resources ? { resource: resources.resourceFromAttributes({ 'service.name': serviceName }) } : {}),
      spanProcessors: [new sdk.BatchSpanProcessor(new otlp.OTLPTraceExporter({ url: otlpEndpoint }))],
    })
    provider.register() // async context and W3C propagation
    tracer = api.trace.getTracer('express-demo')
  }
}

const app = express()

if (tracer) {
  app.use((req, res, next) => {
    tracer.startActiveSpan(`${req.method} ${req.path}`, { kind: api.SpanKind.SERVER }, (span) => {
      res.on('finish', () => {
        span.setAttribute('http.response.status_code', res.statusCode)
        span.end()
      })
      next()
    })
  })
}

// Before the limiter, so that scrapes are neither limited nor counted.
const promClient = optional('prom-client', 'node_modules/prom-client')
if (promClient) {
  const { register } = promClient
  promClient.collectDefaultMetrics({ register })
  telemetry.registerMetrics(register)
  app.get('/metrics', async (_req, res) => {
    res.setHeader('Content-Type', register.contentType)
    res.end(await register.metrics())
  })
}

// Never a fixed fallback: a secret printed in a repository lets anyone mint any identity.
let jwtSecret = process.env.JWT_SECRET
if (!jwtSecret) {
  jwtSecret = require('node:crypto').randomBytes(32).toString('hex')
  console.warn(
    'floodwall example: JWT_SECRET is not set; using a random secret for this process only ' +
      '(tokens signed elsewhere will not verify). Set JWT_SECRET (at least 32 bytes) to keep one.',
  )
}

app.use(
  rateLimit({
    name: 'site',
    limits: ['10/second', '100/minute'],
    key: 'user', // the `sub` of a JWT whose signature verifies, else the client IP
    jwt: { secret: jwtSecret },
    // Only these peers may tell us the client's address in X-Forwarded-For.
    trustedProxies: (process.env.TRUSTED_PROXIES || '').split(',').filter(Boolean),
    headers: 'both',
    redisUrl,
    rules: [{ name: 'login', path: '/login', methods: ['POST'], limits: '3/minute', key: 'ip' }],
  }),
)

app.get('/', (req, res) => res.json({ hello: 'world', key: req.rateLimit.key, remaining: req.rateLimit.remaining }))
app.post('/login', (_req, res) => res.json({ ok: true }))
app.get(
  '/items/:id',
  rateLimit({
    name: 'items',
    limits: '5/10s',
    key: 'user+endpoint',
    jwt: { secret: jwtSecret },
    redisUrl,
  }),
  (req, res) => res.json({ id: req.params.id }),
)

app.listen(port, host, () => {
  const extras = [promClient ? 'metrics at /metrics' : null, otlpEndpoint ? `traces to ${otlpEndpoint}` : null].filter(
    Boolean,
  )
  console.log(
    `floodwall example on http://${host}:${port} (store: ${redisUrl ? redisUrl : 'embedded'}${extras.map((e) => `; ${e}`).join('')})`,
  )
})
