//! HTTP rules shared by every adapter (FastAPI, Express): client IP behind trusted proxies, key
//! scopes, verified JWT subjects, route rules and the rate-limit response headers and body.
