// Types of floodwall/express.
import type { HttpDecision, HttpLimiterOptions, KeyScope } from './index'

/** Express's request, response and next, kept structural so either Express 4 or 5 types fit. */
// biome-ignore lint/suspicious/noExplicitAny: any Express version's request type must fit, without depending on @types/express
type Req = any
// biome-ignore lint/suspicious/noExplicitAny: as Req
type Res = any
type Next = (err?: unknown) => void

export interface RateLimitOptions extends Omit<HttpLimiterOptions, 'key'> {
  /** `'ip'` (default), `'user'` (verified JWT `sub`, else IP), `'apiKey'`, `'global'`, `'endpoint'`, `'ipv4/24'`, `'ipv6/48'`, composites, or a function. */
  /**
   * A function's `undefined`, `null`, `''` or a key over 4 KiB is an error, logged once: that
   * request is keyed by its client IP instead (never one shared bucket, never a 500).
   */
  key?: KeyScope | ((req: Req, res: Res) => string | null | undefined | Promise<string | null | undefined>)
  /** The header that holds API keys for `key: 'apiKey'` (default `'x-api-key'`). */
  apiKeyHeader?: string
  /** Return true to let a request through uncounted. */
  skip?: (req: Req, res: Res) => boolean | Promise<boolean>
  /** Answer a limited request yourself (default: 429 with a JSON body). Headers are already set. */
  handler?: (req: Req, res: Res, next: Next, decision: HttpDecision) => unknown
  /**
   * Where warnings go (default `console`); errors go to `error` when it has one, else `warn`; a
   * shadow rule's would-be denials to `info` (else `debug`), at most once a minute per rule.
   */
  logger?: {
    warn(message: string): void
    error?(message: string): void
    info?(message: string): void
    debug?(message: string): void
  }
  /**
   * With no active OpenTelemetry span, continue the trace of the request's own `traceparent`
   * header (and follow its sampled flag). Only behind a proxy that sets or strips it: a client's
   * header would otherwise force sampling. Default `false`.
   */
  trustTraceparent?: boolean
  /**
   * Called when the store fails; the request is let through either way (until a fallback policy
   * exists). Default: a warning through `logger`, at most every 30 s.
   */
  onStoreError?: (err: Error & { code: 'ERR_FLOODWALL_STORE'; rules: string[] }, req: Req) => void
}

/** Rate limiting middleware, app-wide (`app.use(rateLimit(...))`) or per route. Sets `req.rateLimit`. */
export declare function rateLimit(options: RateLimitOptions): (req: Req, res: Res, next: Next) => Promise<void>
