// Types of the floodwall package (the native addon, re-exported by index.js).

/** `'5/second'`, `'100 per minute'`, `'5/10s'`, `'10/second burst 20'` (token bucket). */
export type LimitString = string

export type Algorithm = 'sliding_window' | 'sliding_log' | 'token_bucket'

export interface LimiterOptions {
  /** The `limiter` label on floodwall's metrics (default: `prefix`). */
  name?: string
  /** One limit or several; several are checked together in one atomic call. */
  limits: LimitString | LimitString[]
  /** Default `'sliding_window'`. */
  algorithm?: Algorithm
  /** `redis://[user:password@]host:port[/db]`, `rediss://` or `unix://`. Absent: the embedded in-process store. */
  redisUrl?: string
  /** Seed nodes of a Redis Cluster (instead of `redisUrl`). */
  clusterNodes?: string[]
  /** Key prefix in Redis (default `'floodwall'`). */
  prefix?: string
  /** Deadline for one Redis call, in milliseconds (default 50); past it the fallback answers. */
  timeoutMs?: number
  /** What answers when Redis cannot (default `'local'`: this process enforces the limits itself). */
  fallback?: Fallback
  /** The circuit breaker in front of Redis. */
  breaker?: BreakerOptions
  /**
   * The local cache layer in front of Redis (Redis only; default off): `true` for its defaults, or
   * some options over them. Decisions it makes say `source: 'cache'` or `'lease'`.
   */
  cache?: boolean | CacheOptions
  /**
   * A ManualClock. The embedded store decides on it. With `redisUrl` too, the Redis scripts take
   * their time from it instead of Redis `TIME`: for tests only (the conformance scenarios), never
   * in production.
   */
  clock?: ManualClock
  /**
   * Most identities this process holds, in the embedded store or the local fallback (default
   * 100,000, about 20-30 MB). When full, the least recently checked go first: one that keeps
   * sending stays counted.
   */
  maxIdentities?: number
}

/**
 * `'open'` allows, `'closed'` denies (`retryAfterMs`, default 1000), `'local'` enforces each limit
 * divided by `expectedInstances` (default 1) in this process, `'error'` rejects with
 * `ERR_FLOODWALL_STORE`. Fallback decisions say `source: 'fallback'`.
 */
export type Fallback =
  | 'open'
  | 'closed'
  | 'local'
  | 'error'
  | { mode: 'open' | 'error' }
  | { mode: 'closed'; retryAfterMs?: number }
  | { mode: 'local'; expectedInstances?: number }

/** Absent fields keep the defaults (in parentheses). */
export interface BreakerOptions {
  /** Open after this many consecutive failures (5). */
  failureThreshold?: number
  /** A call slower than this many ms is slow (25). */
  slowCallMs?: number
  /** Open when this share of the last `slowCallWindow` calls was slow (0.5 of 100)... */
  slowCallRatio?: number
  slowCallWindow?: number
  /** ...and the window holds at least this many calls (20). */
  slowCallMinCalls?: number
  /** Stay open this long, ms (1000). */
  openMs?: number
  /** Probes in half-open; all must succeed to close (3). */
  halfOpenProbes?: number
  /** While open, PING Redis this often, ms (250). */
  healthCheckMs?: number
  /**
   * Redis calls in flight at once from this limiter (32); more wait their turn before their
   * deadline starts, so a burst in this process is not taken for a sick Redis.
   */
  maxInFlight?: number
}

/** Absent fields keep the defaults (in parentheses). */
export interface CacheOptions {
  /** Answer a denied identity locally until the retry time Redis gave; never admits (true). */
  denialCache?: boolean
  /** Concurrent checks of one identity become one script call, answered in arrival order (true). */
  coalesce?: boolean
  /** Most checks in one coalesced call (256). */
  maxBatch?: number
  /** Wait this long, 0-500 µs, before a coalesced call to gather more arrivals (0). */
  batchWindowUs?: number
  /** Hot identities reserve permits in one call and are admitted locally from them (true). */
  leases?: boolean
  /** Lifetime of a lease, 100-500 ms (250). */
  leaseMs?: number
  /**
   * Most permits in leases of one identity, over all instances, as a share of its smallest limit,
   * at most 0.1 (0.01): how far the instances together may deny early. Under 2 permits, no leases.
   */
  driftRatio?: number
  /** Largest single lease (1000). */
  maxLease?: number
  /** Size cap of the cache in bytes (64 MiB). */
  maxBytes?: number
  /** Entries unused this long are dropped and their lease given back, ms (10000). */
  idleMs?: number
  /**
   * An identity gets an entry on its second check within this period, or at once when denied;
   * first sightings are forgotten each period, ms, 100–3600000 (1000).
   */
  doorkeeperMs?: number
  /** Cached denials and leases end up to this share early, at random, below 0.5 (0.1). */
  jitterRatio?: number
}

/** What the cache holds now, and its leases since the limiter was made. */
export interface CacheStats {
  entries: number
  /** Sum of entry weights, what `maxBytes` bounds. */
  weightedBytes: number
  maxBytes: number
  leasesGranted: number
  permitsLeased: number
  permitsReturned: number
}

/** One limit's state. Times are seconds. */
export interface WindowState {
  /** The limit as written back by the parser, e.g. `'5/second'`. */
  name: string
  /** Its count. */
  limit: number
  /** Its window, in seconds. */
  window: number
  remaining: number
  resetAfter: number
  /** Until this limit would admit the request; `null` when it admits it now. */
  retryAfter: number | null
}

/** The answer to "may this request pass?". Being limited is `allowed: false`, never an error. */
export interface Decision {
  allowed: boolean
  /** The count of the binding limit: the one that denied, else the one with the least remaining. */
  limit: number
  remaining: number
  /** Seconds until the binding limit holds none of this identity's requests. */
  resetAfter: number
  /** Seconds to wait before the same request could pass; `null` when allowed. */
  retryAfter: number | null
  /** The limit that denied, e.g. `'5/second'`; `null` when allowed. */
  limitedBy: string | null
  /** Where the decision was made. */
  source: 'redis' | 'memory' | 'cache' | 'lease' | 'fallback'
  /** Every limit, in configuration order. */
  windows: WindowState[]
}

/**
 * Errors thrown by constructors and rejected by calls. `ERR_FLOODWALL_CONFIG`: wrong input
 * (the message names the value); `ERR_FLOODWALL_STORE`: Redis failed or timed out;
 * `ERR_FLOODWALL_INTERNAL`: a bug.
 */
export interface FloodwallError extends Error {
  code: 'ERR_FLOODWALL_CONFIG' | 'ERR_FLOODWALL_STORE' | 'ERR_FLOODWALL_INTERNAL'
}

export interface CheckOptions {
  /** Units to consume (default 1). */
  cost?: number
  /** The caller's W3C trace context, e.g. `'00-<trace id>-<span id>-01'`. */
  traceparent?: string
}

export declare class Limiter {
  /** @throws {FloodwallError} `ERR_FLOODWALL_CONFIG` for a bad option. Does not connect. */
  constructor(options: LimiterOptions)
  /**
   * Consume `cost` units (default 1) from every limit, or nothing if any limit would be exceeded.
   * With `traceparent` (W3C), the core's `floodwall.check` span is a child of that span.
   */
  check(key: string, options?: CheckOptions): Promise<Decision>
  /** Would one more request pass? Consumes nothing. */
  peek(key: string, options?: { traceparent?: string }): Promise<Decision>
  /** Forget every count of the identity. */
  reset(key: string): Promise<void>
  /** Make sure Redis answers (resolves at once on the embedded store). */
  connect(): Promise<void>
  /** The limits as the parser reads them back, e.g. `['5/second', '100/minute']`. */
  get limits(): string[]
  get algorithm(): Algorithm
  /** Which store decides. */
  get store(): 'redis' | 'memory'
  /** The largest cost one check may ask for. */
  get maxCost(): number
  /** The local cache layer's size and leases; `null` without a cache (or on the embedded store). */
  cacheStats(): CacheStats | null
}

/** A clock that moves only when told to (milliseconds since the epoch). For tests. */
export declare class ManualClock {
  /** Default start: now. */
  constructor(startMs?: number)
  advance(ms: number): void
  set(ms: number): void
  now(): number
}

export interface JwtOptions {
  /** HS256 shared secret. */
  secret?: string | Buffer
  /** RS256 or ES256 public key, PEM ("PUBLIC KEY" or, for RSA, "RSA PUBLIC KEY"). */
  publicKey?: string
  /** With `publicKey`: `'RS256'` (default) or `'ES256'`. */
  algorithm?: 'HS256' | 'RS256' | 'ES256'
  /** Require this `iss`. */
  issuer?: string
  /** Require this `aud`. */
  audience?: string
  /** Tolerated clock skew for `exp`/`nbf`/`iat`, seconds (default 0). */
  leewaySecs?: number
  /** Refuse tokens without `exp` (default false: `exp` is checked when present). */
  requireExp?: boolean
}

/**
 * How API keys are verified: a rule keyed by `apiKey` needs at least one of `allow`,
 * `signingSecret` or `verify`. A key that does not verify is anonymous (keyed by IP).
 */
export interface ApiKeyOptions {
  /** Accept exactly these keys (each bucketed by its keyed hash). */
  allow?: string[]
  /**
   * Accept keys `<id>.<hex HMAC-SHA256(signingSecret, id)>` (id: 1-64 of `A-Za-z0-9_-`), bucketed
   * by id. At least 32 bytes.
   */
  signingSecret?: string | Buffer
  /**
   * Your own lookup: return the identity to count the key as (an account id), `true` (count the key
   * itself), or `false`/`null` (unknown). May return a Promise. A throw counts as unknown.
   */
  verify?: (apiKey: string) => string | boolean | null | undefined | Promise<string | boolean | null | undefined>
  /**
   * The secret bucket names are keyed with (at least 32 bytes; default: env FLOODWALL_KEY_SECRET).
   * Every instance sharing a Redis needs the same one; without one, rules in Redis that hash keys
   * are refused.
   */
  keySecret?: string | Buffer
}

/**
 * `'ip'`, `'user'`, `'apiKey'`, `'global'`, `'endpoint'`, a network aggregate such as `'ipv4/24'` or
 * `'ipv6/48'`, or several joined with `+`.
 */
export type KeyScope = string

export interface RuleOptions {
  /** Names the rule in headers ("login-per-minute"), in its Redis keys, and its limiter on metrics. */
  name: string
  /** `'/login'`, `'/api/*'`, `'/items/:id'` or `'/items/{id}'`, `'*'` (default). */
  path?: string
  /** Default: every method. A rule for GET also covers HEAD. */
  methods?: string[]
  limits?: LimitString | LimitString[]
  algorithm?: Algorithm
  redisUrl?: string
  clusterNodes?: string[]
  prefix?: string
  timeoutMs?: number
  fallback?: Fallback
  breaker?: BreakerOptions
  cache?: boolean | CacheOptions
  clock?: ManualClock
  maxIdentities?: number
  /** A shared limiter instead of `limits`. */
  limiter?: Limiter
  key?: KeyScope
  cost?: number
  /**
   * Decide and count, but never deny and send no headers: a would-be denial is only reported
   * (`HttpDecision.shadowDenied`, a log line, metrics `result="shadow_denied"`). Default false.
   */
  shadow?: boolean
}

export interface HttpLimiterOptions {
  /** Names the middleware's own limits in headers, keys and metrics (default `'default'`). */
  name?: string
  limits?: LimitString | LimitString[]
  algorithm?: Algorithm
  redisUrl?: string
  clusterNodes?: string[]
  prefix?: string
  timeoutMs?: number
  fallback?: Fallback
  breaker?: BreakerOptions
  cache?: boolean | CacheOptions
  clock?: ManualClock
  maxIdentities?: number
  limiter?: Limiter
  /** Default `'ip'`. A function key is resolved by the adapter and passed as `HttpRequest.key`. */
  // biome-ignore lint/suspicious/noExplicitAny: any adapter's key function fits (unknown[] would reject typed parameters)
  key?: KeyScope | ((...args: any[]) => unknown)
  cost?: number
  /** CIDRs or addresses of your own proxies; the forwarding header is read only when the peer is one. */
  trustedProxies?: string[]
  /** The header your proxies write the client into (default `'x-forwarded-for'`); only that one is read. */
  forwardedHeader?: 'x-forwarded-for' | 'forwarded'
  /** Trust a unix-socket peer (`server.listen(path)`, peer `'unix:'`) as a proxy. Default false: one `ip:unknown` client. */
  trustUnixSocket?: boolean
  /** IPv6 clients are grouped by this prefix length (default 64). */
  ipv6Prefix?: number
  jwt?: JwtOptions
  apiKeys?: ApiKeyOptions
  /** Default `'draft-10'`. */
  headers?: 'draft-10' | 'legacy' | 'both' | 'none'
  rules?: RuleOptions[]
  /** Make the middleware's own limits (`limits` / `limiter`) a shadow rule; rules have their own. */
  shadow?: boolean
}

export interface StoreFailure {
  rule: string
  code: 'ERR_FLOODWALL_STORE'
  message: string
}

export interface HttpDecision {
  /** Some rule applied to the request. */
  matched: boolean
  allowed: boolean
  status: 200 | 429
  /** Flat pairs: `[name, value, name, value, ...]`. */
  headers: string[]
  /** The JSON body of a 429, else null. */
  body: string | null
  /** The key of the first matching rule, e.g. `'ip:203.0.113.7'` or `'user:alice'`. */
  key: string | null
  /** X-Forwarded-For arrived from a peer that is not a trusted proxy, and was ignored. */
  forwardedForIgnored: boolean
  /** A `user` key part came from a verified JWT. */
  userVerified: boolean
  /** An API key was sent and did not verify (a failed lookup); the request was keyed by IP. */
  apiKeyRejected: boolean
  /** The binding decision (the denial with the longest wait, else the fewest remaining). Seconds. */
  limit: number
  remaining: number
  resetAfter: number
  retryAfter: number | null
  limitedBy: string | null
  /** The rules that matched, in order. */
  rules: string[]
  /** Shadow rules that would have denied the request (it was not denied for them), in order. */
  shadowDenied: string[]
  /** Rules Redis could not decide, answered by their fallback policy. */
  fallbackRules: string[]
  /** Rules whose store failed with fallback `'error'`; they let the request through. */
  storeErrors: StoreFailure[]
  /**
   * Rules whose key from the key function was missing (`undefined`/`null`), empty or over 4 KiB:
   * they keyed the request by its client IP. The message never holds the key.
   */
  keyErrors: { rule: string; message: string }[]
}

/**
 * The engine behind `floodwall/express`, for other frameworks: one call per request resolves the
 * key, decides every matching rule together and formats the headers and 429 body.
 */
export declare class HttpLimiter {
  constructor(options: HttpLimiterOptions)
  decide(
    method: string,
    path: string,
    route: string | undefined | null,
    peer: string,
    forwardedFor?: string | null,
    authorization?: string | null,
    apiKey?: string | null,
    key?: string | null,
    /** W3C trace context of the request's span: the core's spans become its children. */
    traceparent?: string | null,
    /** The answer of `apiKeys.verify` for `apiKey`: true, false or the identity it named. */
    apiKeyVerdict?: string | boolean | null,
  ): Promise<HttpDecision>
  /** Some rule keyed by API key applies to this request and `apiKeys.verify` is set. */
  wantsApiKeyVerdict(method: string, path: string): boolean
  /** Some rule's key comes from a key function (pass `request.key`). */
  get needsKey(): boolean
  /** The header to pass as `forwardedFor`, lower case. */
  get forwardedHeader(): 'x-forwarded-for' | 'forwarded'
  /** Some rule's key has an `'endpoint'` part: pass the route template when known. */
  get needsRoute(): boolean
  get ruleNames(): string[]
}

export interface TraceOptions {
  /** OTLP/HTTP endpoint, e.g. `'http://localhost:4318/v1/traces'`. Absent: spans are not exported. */
  otlpEndpoint?: string
  /**
   * Share of new traces sampled, 0..1 (default 1); a sampled parent passed in is always followed
   * (the Express adapter passes a client's `traceparent` only with `trustTraceparent`).
   */
  samplingRatio?: number
  /** Put raw keys (user ids, IPs) on spans as `floodwall.key`; default: `floodwall.key_hash`. */
  recordRawKeys?: boolean
  /** Default `'floodwall'`. */
  serviceName?: string
}

/** Tracing, logs and metrics of the core. Process-wide. */
export declare const telemetry: {
  /** A `floodwall.check` span per decision, exported over OTLP when `otlpEndpoint` is given. */
  configureTracing(options?: TraceOptions): void
  disableTracing(): void
  /** Warnings and errors as JSON lines on stderr, with trace ids. Default filter `'floodwall=warn'`. */
  installJsonLogs(filter?: string): void
  /** Every live limiter's metrics in the Prometheus text format. */
  prometheusText(): string
  /**
   * Show floodwall's metric families in a prom-client Registry (default: prom-client's global
   * `register`); each scrape reads the core's current values. Returns the registry.
   */
  // biome-ignore lint/suspicious/noExplicitAny: prom-client's registerMetric(metric: Metric) fits without depending on its types
  registerMetrics<R extends { registerMetric(metric: any): void }>(registry?: R): R
}
