"""FastAPI / Starlette adapters: the ``@limit`` decorator, the ``RateLimit`` dependency and the
``RateLimitMiddleware``. Everything about a request's key, the client IP, JWT verification, rule
matching, headers and the 429 body is decided in the Rust core (``HttpLimiter``); this module only
reads the ASGI request and writes the response.

    from fastapi import Depends, FastAPI
    from floodwall.fastapi import RateLimit, RateLimitMiddleware, Rule, limit

    app = FastAPI()
    app.add_middleware(RateLimitMiddleware, limits="100/minute",
                       rules=[Rule("/login", "5/minute", methods=["POST"])])

    @app.get("/items")
    @limit("10/minute", key="user+ip", jwt={"secret": SECRET})
    async def items(): ...

    @app.get("/search", dependencies=[Depends(RateLimit("5/second"))])
    async def search(): ...

    # A key counts apart only once verified: an allow-list, signed keys, or your own lookup.
    @app.get("/v1/data")
    @limit("100/minute", key="api_key", api_keys={"verify": lookup_account})
    async def data(): ...

    # A shadow rule counts and reports (logs, metrics, ``decision.shadow_denied``) but never denies.
    app.add_middleware(RateLimitMiddleware, rules=[Rule("/search", "2/second", shadow=True)])
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import telemetry
from ._floodwall import HttpDecision, HttpLimiter, HttpRule, Limiter

try:  # The app's OpenTelemetry, if it has one: its active span is the parent of floodwall's.
    from opentelemetry import propagate as _otel_propagate
except ImportError:  # pragma: no cover - depends on the environment
    _otel_propagate = None  # type: ignore[assignment]

__all__ = [
    "KeyFunc",
    "VerifyFunc",
    "RateLimit",
    "RateLimitExceeded",
    "RateLimitMiddleware",
    "Rule",
    "limit",
    "rate_limit_exceeded_handler",
]

logger = logging.getLogger("floodwall")

KeyFunc = Callable[[Request], str | None | Awaitable[str | None]]
"""A key made by the app from the request: ``lambda request: request.headers.get("x-tenant")``.
None, an empty key or one over 4 KiB is an error, logged once: that request is keyed by its client IP."""

VerifyFunc = Callable[[str], bool | str | None | Awaitable[bool | str | None]]
"""An ``api_keys["verify"]`` callback: given the API key, return the identity to count it as (an
account id), True (count the key itself), or False/None (unknown: the request is keyed by IP)."""

# A shadow rule's would-be denials are logged at most this often per rule (the first at once).
SHADOW_LOG_INTERVAL_S = 60.0

StoreErrorHook = Callable[[Request, HttpDecision], Response | None | Awaitable[Response | None]]
"""Called when a rule's store failed and its limiter was built with ``fallback="error"``. Return a
Response to send it instead (e.g. a 503), or None to let the request through (the default)."""

# Keyword arguments that build a Limiter (the rest configure the HTTP side).
LIMITER_OPTIONS = frozenset(
    {
        "algorithm",
        "redis_url",
        "prefix",
        "timeout_ms",
        "fallback",
        "breaker",
        "cache",
        "cluster_nodes",
        "tls_ca_file",
        "clock",
        "max_identities",
    }
)


class Rule:
    """Limits for requests whose path matches ``path`` ("/login", "/api/*", "/items/{id}", "*")
    and whose method is in ``methods`` (None: all). ``key``: "ip", "user", "api_key", "global",
    "endpoint" (the route template), a network aggregate ("ipv4/24", "ipv6/48"), a combination
    such as "user+endpoint+ip", or a callable taking the Request. ``shadow=True``: the rule decides
    and counts but never denies and sends no headers; what it would have denied is logged, counted
    (``result="shadow_denied"``) and listed in ``decision.shadow_denied``.
    Limiter options (``redis_url``, ``algorithm``, ``fallback``, ...) default to the middleware's;
    or pass a ready ``limiter``."""

    def __init__(
        self,
        path: str,
        limits: str | Sequence[str] | None = None,
        *,
        methods: Sequence[str] | None = None,
        key: str | KeyFunc = "ip",
        cost: int = 1,
        name: str | None = None,
        limiter: Limiter | None = None,
        shadow: bool = False,
        **options: Any,
    ) -> None:
        _check_options(options)
        _check_shadow(shadow)
        self.path, self.limits, self.methods, self.key = path, limits, methods, key
        self.cost, self.name, self.limiter, self.options = cost, name, limiter, options
        self.shadow = shadow

    def __repr__(self) -> str:
        return (
            f"Rule({self.path!r}, {self.limits!r}, methods={self.methods!r}, key={self.key!r}, name={self.name!r}"
            + (", shadow=True)" if self.shadow else ")")
        )


def _check_options(options: Mapping[str, Any]) -> None:
    unknown = set(options) - LIMITER_OPTIONS
    if unknown:
        raise TypeError(f"unexpected option(s) {sorted(unknown)}; limiter options are {sorted(LIMITER_OPTIONS)}")


def _check_shadow(shadow: object) -> None:
    # A truthy string ("false") must not quietly turn enforcement off.
    if not isinstance(shadow, bool):
        raise TypeError(f"invalid shadow {shadow!r}: must be True or False")


_names_lock = threading.Lock()
_names_taken: set[str] = set()


def _rule_name(hint: str) -> str:
    """A valid, process-unique rule name from `hint`. Names are part of each bucket's identity,
    so two decorated endpoints never share a bucket by accident; they are made in import order,
    so every worker of an app derives the same names."""
    base = re.sub(r"[^A-Za-z0-9_.:-]+", "-", hint).strip("-.")[:56] or "rule"
    with _names_lock:
        name, n = base, 2
        while name in _names_taken:
            name, n = f"{base}-{n}", n + 1
        _names_taken.add(name)
    return name


def _make_limiter(
    limits: str | Sequence[str] | None, limiter: Limiter | None, options: Mapping[str, Any], name: str
) -> Limiter:
    if limiter is not None:
        if limits is not None or options:
            raise TypeError("give either `limiter` or `limits` (with limiter options), not both")
        return limiter
    if limits is None:
        raise TypeError('give `limits` (e.g. "10/minute") or a `limiter`')
    # The rule's name is the `limiter` label of its metrics.
    return Limiter(limits if isinstance(limits, str) else list(limits), name=name, **options)


def _traceparent(scope: Scope, trust_header: bool) -> str | None:
    """The W3C trace context floodwall's span continues: the app's active OpenTelemetry span if
    there is one, else, only when the app trusts its clients' headers, the request's `traceparent`.
    A client-sent header is not trusted by default: a sampled parent is always followed, so any
    client could otherwise force sampling. None while floodwall does not trace."""
    if not telemetry._tracing:
        return None
    if _otel_propagate is not None:
        carrier: dict[str, str] = {}
        _otel_propagate.inject(carrier)
        tp = carrier.get("traceparent")
        if tp:
            return tp
    if not trust_header:
        return None
    for name, value in scope.get("headers") or ():
        if name == b"traceparent":
            return str(value.decode("latin-1"))
    return None


# Warn once per process about an ignored X-Forwarded-For, however many adapters see it.
_warned_xff = False


class _Engine:
    """One native HttpLimiter plus what only Python can do: call the app's key functions, log,
    and build Starlette responses."""

    def __init__(
        self,
        rules: list[tuple[HttpRule, KeyFunc | None]],
        *,
        trusted_proxies: Iterable[str] | None,
        ipv6_prefix: int | None,
        jwt: Mapping[str, Any] | None,
        headers: str,
        api_key_header: str,
        on_store_error: StoreErrorHook | None,
        trust_traceparent: bool = False,
        forwarded_header: str = "x-forwarded-for",
        trust_unix_socket: bool = False,
        api_keys: Mapping[str, Any] | None = None,
    ) -> None:
        self.native = HttpLimiter(
            [r for r, _ in rules],
            trusted_proxies=list(trusted_proxies or ()),
            ipv6_prefix=ipv6_prefix,
            jwt=dict(jwt) if jwt is not None else None,
            headers=headers,
            forwarded_header=forwarded_header,
            trust_unix_socket=trust_unix_socket,
            api_keys=dict(api_keys) if api_keys is not None else None,
        )
        # The one forwarding header the core reads (the core validated the option).
        self.forwarded_header = self.native.forwarded_header.encode("latin-1")
        self.key_funcs = {r.name: f for r, f in rules if f is not None}
        # The native side has checked that it is callable; only Python can call it.
        self.verify: VerifyFunc | None = (api_keys or {}).get("verify")
        self.api_key_rules = frozenset(self.native.api_key_rules)
        self._warned_verify = False
        self.api_key_header = api_key_header.lower().encode("latin-1")
        self.on_store_error = on_store_error
        self.trust_traceparent = bool(trust_traceparent)
        self._in_fallback = False
        self._warned_key = False
        # rule -> (when last logged, would-be denials since): see _report_shadow.
        self._shadow_log: dict[str, tuple[float, int]] = {}

    async def decide(self, scope: Scope, route: str | None = None) -> HttpDecision:
        forwarded: list[bytes] = []
        authorization = api_key = None
        for name, value in scope.get("headers") or ():
            if name == self.forwarded_header:
                forwarded.append(value)
            elif name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == self.api_key_header:
                api_key = value.decode("latin-1")
        client = scope.get("client")
        keys = None
        if self.key_funcs:
            method, path = scope.get("method", "GET"), scope.get("path", "/")
            # Only the rules that apply: a key function may rely on what its own routes carry.
            wanted = [n for n in self.native.matching(method, path) if n in self.key_funcs]
            request = Request(scope)
            keys = {}
            for rule in wanted:
                key = self.key_funcs[rule](request)
                if inspect.isawaitable(key):
                    key = await key
                # None stays missing: the core keys that request by its client IP and says so.
                if key is not None:
                    keys[rule] = key if isinstance(key, str) else str(key)
        verdict = None
        if self.verify is not None and api_key is not None and api_key.strip() and self.api_key_rules:
            method, path = scope.get("method", "GET"), scope.get("path", "/")
            if self.api_key_rules.intersection(self.native.matching(method, path)):
                verdict = await self._verify(api_key.strip())
        d: HttpDecision = await self.native.decide(
            scope.get("method", "GET"),
            scope.get("path", "/"),
            str(client[0]) if client else _unix_peer(scope),
            route=route,
            forwarded_for=b",".join(forwarded).decode("latin-1") if forwarded else None,
            authorization=authorization,
            api_key=api_key,
            keys=keys,
            traceparent=_traceparent(scope, self.trust_traceparent),
            api_key_verdict=verdict,
        )
        self._observe(d)
        return d

    async def _verify(self, api_key: str) -> bool | str:
        """The app's answer about a key: an identity, True, or False. A callback that fails or
        answers something else leaves the key unverified (keyed by IP), never a 500."""
        verify = self.verify
        if verify is None:
            return False
        try:
            out = verify(api_key)
            if inspect.isawaitable(out):
                out = await out
        except Exception:
            self._warn_verify("raised", exc_info=True)
            return False
        if out is None or isinstance(out, bool):
            return bool(out)
        if isinstance(out, str):
            return out
        self._warn_verify(f"returned a {type(out).__name__}; expected an identity str, True, False or None")
        return False

    def _warn_verify(self, what: str, exc_info: bool = False) -> None:
        if not self._warned_verify:
            self._warned_verify = True
            logger.error(
                "floodwall: the api_keys verify callback %s; the key was treated as unverified (logged once)",
                what,
                exc_info=exc_info,
            )

    def _observe(self, d: HttpDecision) -> None:
        global _warned_xff
        if d.forwarded_for_ignored and not _warned_xff:
            _warned_xff = True
            logger.warning(
                "floodwall: X-Forwarded-For from a peer that is not a trusted proxy was ignored; "
                "if this app runs behind a proxy, list it in trusted_proxies"
            )
        if d.fallback != self._in_fallback:
            self._in_fallback = d.fallback
            if d.fallback:
                logger.warning("floodwall: Redis is unavailable; the fallback policy is deciding")
            else:
                logger.info("floodwall: Redis answers again")
        if d.key_errors and not self._warned_key:
            self._warned_key = True
            rule, problem = d.key_errors[0]
            logger.error(
                "floodwall: rule %r: %s; such requests are keyed by their client IP instead (logged once)",
                rule,
                problem,
            )
        for rule, message in d.store_errors:
            logger.warning("floodwall: rule %r let a request through because its store failed: %s", rule, message)
        for rule in d.shadow_denied:
            self._report_shadow(rule)

    def _report_shadow(self, rule: str) -> None:
        """A shadow rule would have denied: logged at info, the first time at once and then at
        most once per SHADOW_LOG_INTERVAL_S per rule with the count since, so that a rule set
        too low does not flood the log. Metrics count every one."""
        now = time.monotonic()
        last, since = self._shadow_log.get(rule, (None, 0))
        since += 1
        if last is not None and now - last < SHADOW_LOG_INTERVAL_S:
            self._shadow_log[rule] = (last, since)
            return
        self._shadow_log[rule] = (now, 0)
        logger.info(
            "floodwall: shadow rule %r would have denied %d request(s) since its last report; not enforced",
            rule,
            since,
        )

    async def store_error_response(self, scope: Scope, d: HttpDecision) -> Response | None:
        """The seam for a policy on failed stores (limiters with fallback="error")."""
        if not d.store_errors or self.on_store_error is None:
            return None
        out = self.on_store_error(Request(scope), d)
        if inspect.isawaitable(out):
            out = await out
        return out


def _limited_response(d: HttpDecision) -> Response:
    return Response(d.body, status_code=429, headers=dict(d.headers), media_type="application/json")


def _param_of(sig: inspect.Signature, cls: type) -> str | None:
    """The name of the endpoint's own parameter annotated `cls` (or a subclass), if any."""
    for p in sig.parameters.values():
        if isinstance(p.annotation, type) and issubclass(p.annotation, cls):
            return p.name
    return None


def _remember(scope: Scope, d: HttpDecision) -> None:
    """The decision as ``request.state.rate_limit``, for the endpoint (and its logs) to read."""
    state = scope.setdefault("state", {})
    if isinstance(state, dict):
        state["rate_limit"] = d


def _add_headers(response: Response, d: HttpDecision) -> None:
    for name, value in d.headers:
        response.headers.append(name, value)


def _unix_peer(scope: Scope) -> str:
    """The peer of a request without a client address: "unix:" when the server listens on a unix
    socket (uvicorn --uds gives neither a client nor a server address; others name the socket path
    with no port), else "" (unknown)."""
    server = scope.get("server")
    if server is None or (len(server) > 1 and server[1] is None):
        return "unix:"
    return ""


def _find_route(scope: Scope) -> str | None:
    """The template of the route the app will send this request to, found before it routes (the
    middleware runs first): the first full match in the app's routes as Starlette tries them,
    else the first partial one (a method mismatch, answered 405), with mount prefixes."""
    router = getattr(scope.get("app"), "router", None)
    return _match_routes(getattr(router, "routes", None) or (), scope, "")


def _match_routes(routes: Iterable[Any], scope: Scope, prefix: str) -> str | None:
    partial = None
    for route in routes:
        path = getattr(route, "path", None)
        if not isinstance(path, str):
            included = _included_router_route(route, scope)
            if included is not None:
                return prefix + included
            continue
        try:
            match, child = route.matches(scope)
        except Exception:  # a route of an odd kind must not fail the request
            continue
        if match == Match.NONE:
            continue
        found: str | None = prefix + path
        inner = getattr(route, "routes", None)
        if inner:  # a Mount: the route inside it, else nothing we can name
            found = _match_routes(inner, {**scope, **child}, prefix + path)
        elif getattr(route, "app", None) is not None and not hasattr(route, "endpoint"):
            found = None  # a mounted ASGI app: its own routes are unknown
        if match == Match.FULL:
            return found
        partial = partial or found
    return partial


def _included_router_route(router: Any, scope: Scope) -> str | None:
    """FastAPI 0.16x includes routers lazily (a route without a path that matches on behalf of
    its router's routes): ask it which of them it picks and read that route's full template."""
    match_fn = getattr(router, "_match", None)
    if not callable(match_fn):
        return None
    try:
        match, _, route, context = match_fn(scope)
    except Exception:  # another FastAPI's internals: fall back to the normalised path
        return None
    if match == Match.NONE or route is None:
        return None
    if context is None:  # a router included in the included router
        return _included_router_route(route, scope)
    template = getattr(context, "path_format", None)
    return template if isinstance(template, str) and template else None


def _route_template(scope: Scope) -> str | None:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else None


class _RespondWith(HTTPException):
    """An HTTPException that carries the exact response to send (see `_install_handler`)."""

    def __init__(self, response: Response, detail: Any) -> None:
        super().__init__(response.status_code, detail, dict(response.headers))
        self.response = response


class RateLimitExceeded(_RespondWith):
    """Raised by the ``RateLimit`` dependency on a denial: a 429 with the rate-limit headers and
    the core's JSON body ({"error": "rate_limited", "limit": ..., "retry_after": ...})."""

    def __init__(self, decision: HttpDecision) -> None:
        super().__init__(_limited_response(decision), json.loads(decision.body or "{}"))
        self.decision = decision


def rate_limit_exceeded_handler(request: Request, exc: Exception) -> Response:
    """Exception handler that sends the response a floodwall exception carries. Installed on first
    use; register it yourself with ``app.add_exception_handler(RateLimitExceeded, ...)``."""
    if isinstance(exc, _RespondWith):
        return exc.response
    raise exc


def _install_handler(scope: Scope) -> None:
    # Starlette's ExceptionMiddleware puts its handler table in the scope; adding ours there (once,
    # never replacing one the app registered for these classes) sends the carried response without
    # setup code. Without the table, FastAPI's HTTPException handler still sends the status and
    # headers, with {"detail": <body>}.
    handlers = scope.get("starlette.exception_handlers")
    if handlers and isinstance(handlers[0], dict):
        handlers[0].setdefault(_RespondWith, rate_limit_exceeded_handler)


class _Single:
    """Shared by the decorator and the dependency: one rule for the requests of an endpoint."""

    def __init__(
        self,
        limits: str | Sequence[str] | None,
        *,
        name: str,
        key: str | KeyFunc,
        cost: int,
        limiter: Limiter | None,
        trusted_proxies: Iterable[str] | None,
        ipv6_prefix: int | None,
        jwt: Mapping[str, Any] | None,
        headers: str,
        api_key_header: str,
        on_store_error: StoreErrorHook | None,
        trust_traceparent: bool,
        options: Mapping[str, Any],
        forwarded_header: str = "x-forwarded-for",
        trust_unix_socket: bool = False,
        api_keys: Mapping[str, Any] | None = None,
        shadow: bool = False,
    ) -> None:
        _check_options(options)
        _check_shadow(shadow)
        self.limiter = _make_limiter(limits, limiter, options, name)
        func = key if callable(key) else None
        rule = HttpRule(name, self.limiter, key=None if func else key, cost=cost, shadow=shadow)  # type: ignore[arg-type]
        self.engine = _Engine(
            [(rule, func)],
            trusted_proxies=trusted_proxies,
            ipv6_prefix=ipv6_prefix,
            jwt=jwt,
            headers=headers,
            api_key_header=api_key_header,
            on_store_error=on_store_error,
            trust_traceparent=trust_traceparent,
            forwarded_header=forwarded_header,
            trust_unix_socket=trust_unix_socket,
            api_keys=api_keys,
        )


def limit(
    limits: str | Sequence[str] | None = None,
    *,
    key: str | KeyFunc = "ip",
    cost: int = 1,
    name: str | None = None,
    limiter: Limiter | None = None,
    trusted_proxies: Iterable[str] | None = None,
    ipv6_prefix: int | None = None,
    jwt: Mapping[str, Any] | None = None,
    headers: str = "draft-10",
    api_key_header: str = "x-api-key",
    api_keys: Mapping[str, Any] | None = None,
    on_store_error: StoreErrorHook | None = None,
    trust_traceparent: bool = False,
    forwarded_header: str = "x-forwarded-for",
    trust_unix_socket: bool = False,
    shadow: bool = False,
    **options: Any,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Limit one endpoint. Put it below the route decorator; the endpoint needs no ``request``
    parameter. A denied request gets a 429 JSON response with Retry-After; allowed ones get the
    RateLimit headers (set on the response the endpoint returns, or on FastAPI's own).
    ``trust_traceparent``: with no active OpenTelemetry span, continue the trace of the request's
    own ``traceparent`` header (which also makes floodwall follow its sampled flag); only behind a
    proxy that sets or strips it. Default False. ``shadow=True``: decide and count, but never deny
    nor send headers; a would-be denial is logged, counted and in ``request.state.rate_limit``."""

    def decorate(endpoint: Callable[..., Any]) -> Callable[..., Any]:
        single = _Single(
            limits,
            name=name or _rule_name(endpoint.__qualname__),
            key=key,
            cost=cost,
            limiter=limiter,
            trusted_proxies=trusted_proxies,
            ipv6_prefix=ipv6_prefix,
            jwt=jwt,
            headers=headers,
            api_key_header=api_key_header,
            on_store_error=on_store_error,
            trust_traceparent=trust_traceparent,
            options=options,
            forwarded_header=forwarded_header,
            trust_unix_socket=trust_unix_socket,
            api_keys=api_keys,
            shadow=shadow,
        )
        engine = single.engine
        is_async = inspect.iscoroutinefunction(endpoint)
        try:
            sig = inspect.signature(endpoint, eval_str=True)
        except NameError:
            sig = inspect.signature(endpoint)
        # FastAPI hands the Request (and the Response) to one parameter each: when the endpoint
        # takes its own, the wrapper reads that one instead of adding a second that stays unset.
        own_request = _param_of(sig, Request)
        own_response = _param_of(sig, Response)

        @functools.wraps(endpoint)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            request: Request = kwargs[own_request] if own_request else kwargs.pop("_floodwall_request")
            response: Response = kwargs[own_response] if own_response else kwargs.pop("_floodwall_response")
            d = await engine.decide(request.scope, _route_template(request.scope))
            _remember(request.scope, d)
            if not d.allowed:
                return _limited_response(d)
            failed = await engine.store_error_response(request.scope, d)
            if failed is not None:
                return failed
            result = await endpoint(*args, **kwargs) if is_async else await run_in_threadpool(endpoint, *args, **kwargs)
            _add_headers(result if isinstance(result, Response) else response, d)
            return result

        extra = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=cls)
            for name, cls, own in (
                ("_floodwall_request", Request, own_request),
                ("_floodwall_response", Response, own_response),
            )
            if own is None
        ]
        params = list(sig.parameters.values())
        var_kw = [p for p in params if p.kind is inspect.Parameter.VAR_KEYWORD]
        params = [p for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD] + extra + var_kw
        wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.floodwall_limiter = single.limiter  # type: ignore[attr-defined]
        return wrapper

    return decorate


class RateLimit:
    """A dependency: ``Depends(RateLimit("5/second", key="user+ip", jwt={"secret": ...}))`` in a
    route's ``dependencies`` or as a parameter (its value is the ``HttpDecision``, also in
    ``request.state.rate_limit``). A denial raises ``RateLimitExceeded`` (429); with
    ``shadow=True`` none does (the denial is only reported). One instance is one bucket per key,
    wherever it is used; add "endpoint" to the key to count each route apart."""

    def __init__(
        self,
        limits: str | Sequence[str] | None = None,
        *,
        key: str | KeyFunc = "ip",
        cost: int = 1,
        name: str | None = None,
        limiter: Limiter | None = None,
        trusted_proxies: Iterable[str] | None = None,
        ipv6_prefix: int | None = None,
        jwt: Mapping[str, Any] | None = None,
        headers: str = "draft-10",
        api_key_header: str = "x-api-key",
        api_keys: Mapping[str, Any] | None = None,
        on_store_error: StoreErrorHook | None = None,
        trust_traceparent: bool = False,
        forwarded_header: str = "x-forwarded-for",
        trust_unix_socket: bool = False,
        shadow: bool = False,
        **options: Any,
    ) -> None:
        hint = name or "dep-" + (limits if isinstance(limits, str) else "+".join(limits or ["limiter"]))
        single = _Single(
            limits,
            name=name or _rule_name(hint),
            key=key,
            cost=cost,
            limiter=limiter,
            trusted_proxies=trusted_proxies,
            ipv6_prefix=ipv6_prefix,
            jwt=jwt,
            headers=headers,
            api_key_header=api_key_header,
            on_store_error=on_store_error,
            trust_traceparent=trust_traceparent,
            options=options,
            forwarded_header=forwarded_header,
            trust_unix_socket=trust_unix_socket,
            api_keys=api_keys,
            shadow=shadow,
        )
        self.limiter = single.limiter
        self._engine = single.engine

    async def __call__(self, request: Request, response: Response) -> HttpDecision:
        d = await self._engine.decide(request.scope, _route_template(request.scope))
        _remember(request.scope, d)
        if not d.allowed:
            _install_handler(request.scope)
            raise RateLimitExceeded(d)
        failed = await self._engine.store_error_response(request.scope, d)
        if failed is not None:
            _install_handler(request.scope)
            raise _RespondWith(failed, bytes(failed.body).decode("utf-8", "replace"))
        _add_headers(response, d)
        return d


class RateLimitMiddleware:
    """Limits for the whole app: ``limits`` (with ``key``) apply to every request, and each
    ``Rule`` to the requests it matches. All rules that match one request are decided together:
    one denial denies, and the headers describe every limit. Limiter options (``redis_url``,
    ``algorithm``, ``fallback``, ...) apply to every rule that does not bring its own. ``shadow``
    makes the app-wide limit a shadow rule (each ``Rule`` has its own ``shadow``). The decision is
    in ``request.state.rate_limit``."""

    def __init__(
        self,
        app: ASGIApp,
        limits: str | Sequence[str] | None = None,
        *,
        rules: Sequence[Rule] = (),
        key: str | KeyFunc = "ip",
        cost: int = 1,
        name: str = "default",
        limiter: Limiter | None = None,
        trusted_proxies: Iterable[str] | None = None,
        ipv6_prefix: int | None = None,
        jwt: Mapping[str, Any] | None = None,
        headers: str = "draft-10",
        api_key_header: str = "x-api-key",
        api_keys: Mapping[str, Any] | None = None,
        on_store_error: StoreErrorHook | None = None,
        trust_traceparent: bool = False,
        forwarded_header: str = "x-forwarded-for",
        trust_unix_socket: bool = False,
        shadow: bool = False,
        **options: Any,
    ) -> None:
        _check_options(options)
        _check_shadow(shadow)
        self.app = app
        built: list[tuple[HttpRule, KeyFunc | None]] = []
        if limits is not None or limiter is not None:
            lim = _make_limiter(limits, limiter, options, name)
            func = key if callable(key) else None
            rule = HttpRule(name, lim, key=None if func else key, cost=cost, shadow=shadow)  # type: ignore[arg-type]
            built.append((rule, func))
        taken = {name} if built else set()
        for r in rules:
            rname = r.name or _unique(
                re.sub(r"[^A-Za-z0-9_.:-]+", "-", r.path.strip("/*")).strip("-.")[:56] or "root", taken
            )
            taken.add(rname)
            lim = r.limiter if r.limiter is not None else _make_limiter(r.limits, None, {**options, **r.options}, rname)
            if r.limiter is not None and (r.limits is not None or r.options):
                raise TypeError(f"rule {rname!r}: give either `limiter` or `limits` (with limiter options), not both")
            func = r.key if callable(r.key) else None
            rule = HttpRule(
                rname,
                lim,
                path=r.path,
                methods=list(r.methods) if r.methods else None,
                key=None if func else r.key,  # type: ignore[arg-type]
                cost=r.cost,
                shadow=r.shadow,
            )
            built.append((rule, func))
        if not built:
            raise TypeError("RateLimitMiddleware: give `limits` (or a `limiter`) for the whole app, or `rules`")
        self.engine = _Engine(
            built,
            trusted_proxies=trusted_proxies,
            ipv6_prefix=ipv6_prefix,
            jwt=jwt,
            headers=headers,
            api_key_header=api_key_header,
            on_store_error=on_store_error,
            trust_traceparent=trust_traceparent,
            forwarded_header=forwarded_header,
            trust_unix_socket=trust_unix_socket,
            api_keys=api_keys,
        )
        self._needs_route = self.engine.native.needs_route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.engine.native.matches(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        # The app has not routed yet: an "endpoint" key names the route it will pick, not the URL.
        d = await self.engine.decide(scope, _find_route(scope) if self._needs_route else None)
        _remember(scope, d)
        if not d.allowed:
            await _limited_response(d)(scope, receive, send)
            return
        failed = await self.engine.store_error_response(scope, d)
        if failed is not None:
            await failed(scope, receive, send)
            return
        if not d.headers:
            await self.app(scope, receive, send)
            return
        extra = [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in d.headers]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _unique(base: str, taken: set[str]) -> str:
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name
