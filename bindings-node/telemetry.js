// floodwall.telemetry: the core's tracing (a `floodwall.check` span per decision, OTLP export),
// JSON logs and metrics. The metrics live in the core; `registerMetrics` shows them in a
// prom-client Registry so that an app's existing /metrics carries them.
'use strict'

const native = require('./native.js')

function configError(message) {
  const err = new Error(message)
  err.code = 'ERR_FLOODWALL_CONFIG'
  return err
}

// One snapshot of the core's families per scrape: prom-client calls every metric's get() in the
// same tick, so all families come from one consistent read.
let snapshot = null
function families() {
  if (snapshot === null) {
    snapshot = native._metricFamilies()
    queueMicrotask(() => {
      snapshot = null
    })
  }
  return snapshot
}

/** A prom-client metric whose values are the core's current samples of one family. */
function familyMetric(name, help, type) {
  const read = () => {
    const f = families().find((x) => x.name === name)
    const values = []
    for (const s of f ? f.samples : []) {
      const labels = {}
      for (let i = 0; i < s.labels.length; i += 2) labels[s.labels[i]] = s.labels[i + 1]
      values.push({ metricName: name + s.suffix, labels, value: s.value })
    }
    return { name, help, type, aggregator: 'sum', values }
  }
  return { name, help, type, aggregator: 'sum', get: read, reset() {} }
}

const registered = new WeakSet()

/**
 * Register floodwall's metric families with a prom-client Registry (default: prom-client's global
 * `register`). Registering the same registry twice does nothing.
 */
function registerMetrics(registry) {
  if (registry === undefined) {
    try {
      registry = require('prom-client').register
    } catch {
      throw configError('registerMetrics: prom-client is not installed; install it or pass a Registry')
    }
  }
  if (registry === null || typeof registry !== 'object' || typeof registry.registerMetric !== 'function') {
    throw configError('invalid registry: must be a prom-client Registry')
  }
  if (registered.has(registry)) return registry
  for (const f of native._metricFamilies()) {
    registry.registerMetric(familyMetric(f.name, f.help, f.kind))
  }
  registered.add(registry)
  return registry
}

module.exports = {
  configureTracing: native.configureTracing,
  disableTracing: native.disableTracing,
  installJsonLogs: native.installJsonLogs,
  prometheusText: native.prometheusText,
  registerMetrics,
  // a test build of the addon (cargo feature test-hooks, test.sh) traces into memory; a plain
  // `napi build` has none of these
  ...(native._enableTestTracing && {
    _enableTestTracing: native._enableTestTracing,
    _finishedSpans: native._finishedSpans,
    _clearFinishedSpans: native._clearFinishedSpans,
  }),
}
