# Types of the native module floodwall._floodwall (bindings-python/src). A test runs
# mypy.stubtest against the built module, so this file cannot drift from it. The test build's
# switches (src/test_hooks.rs, feature test-hooks) are private and left out.

from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, final

__all__ = [
    "ConfigError",
    "Decision",
    "FloodwallError",
    "HttpDecision",
    "HttpLimiter",
    "HttpRule",
    "Limiter",
    "ManualClock",
    "RuleDecision",
    "StoreError",
    "Window",
    "__version__",
    "_metric_families",
    "configure_tracing",
    "disable_tracing",
    "install_json_logs",
    "prometheus_text",
    "limited_body",
    "rate_limit_headers",
]

__version__: str

class FloodwallError(Exception):
    """Base class of every floodwall error."""

class ConfigError(FloodwallError):
    """Invalid input: a limit string, algorithm, key, cost or Redis URL."""

class StoreError(FloodwallError):
    """The store (Redis) failed, timed out or was unreachable (raised only with fallback="error")."""

@final
class Window:
    """One limit's view of a request."""

    @property
    def limit(self) -> str: ...
    @property
    def max(self) -> int: ...
    @property
    def window(self) -> float: ...
    @property
    def policy(self) -> str: ...
    @property
    def remaining(self) -> int: ...
    @property
    def reset_after(self) -> float: ...
    @property
    def retry_after(self) -> float | None: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class Decision:
    """The answer to one check: a value, never an exception."""

    @property
    def allowed(self) -> bool: ...
    @property
    def limit(self) -> int: ...
    @property
    def remaining(self) -> int: ...
    @property
    def reset_after(self) -> float: ...
    @property
    def retry_after(self) -> float | None: ...
    @property
    def limited_by(self) -> str | None: ...
    @property
    def source(self) -> str: ...
    @property
    def windows(self) -> list[Window]: ...
    @property
    def at(self) -> float: ...
    def to_dict(self) -> dict[str, Any]: ...
    def __bool__(self) -> bool: ...

@final
class ManualClock:
    """A clock that moves only when told to (tests). With a redis_url, Redis scripts take their
    time from it too: test-only, never in production."""

    def __new__(cls, start_ms: float | None = None) -> ManualClock: ...
    def advance(self, ms: float) -> None: ...
    def set(self, ms: float) -> None: ...
    @property
    def now_ms(self) -> float: ...

@final
class Limiter:
    """Rate limits for many identities, on Redis (redis_url / cluster_nodes) or in process."""

    def __new__(
        cls,
        limits: str | Sequence[str],
        algorithm: str = "sliding_window",
        redis_url: str | None = None,
        prefix: str = "floodwall",
        timeout_ms: int | None = None,
        fallback: str | Mapping[str, Any] | None = None,
        breaker: Mapping[str, Any] | None = None,
        cache: bool | Mapping[str, Any] | None = None,
        cluster_nodes: Sequence[str] | None = None,
        tls_ca_file: str | None = None,
        clock: ManualClock | None = None,
        name: str | None = None,
        max_identities: int | None = None,
    ) -> Limiter: ...
    def check(self, key: str, cost: int = 1, *, traceparent: str | None = None) -> Awaitable[Decision]: ...
    def check_sync(self, key: str, cost: int = 1, *, traceparent: str | None = None) -> Decision: ...
    def peek(self, key: str, *, traceparent: str | None = None) -> Awaitable[Decision]: ...
    def peek_sync(self, key: str, *, traceparent: str | None = None) -> Decision: ...
    def reset(self, key: str) -> Awaitable[None]: ...
    def reset_sync(self, key: str) -> None: ...
    def connect(self) -> Awaitable[None]: ...
    def connect_sync(self) -> None: ...
    @property
    def limits(self) -> list[str]: ...
    @property
    def algorithm(self) -> str: ...
    @property
    def store(self) -> str: ...
    @property
    def prefix(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def max_cost(self) -> int: ...
    @property
    def fallback(self) -> str: ...
    @property
    def breaker_state(self) -> str | None: ...
    @property
    def clock_offset(self) -> float | None: ...
    def metrics(self) -> dict[str, Any]: ...
    def cache_stats(self) -> dict[str, int] | None: ...

@final
class HttpRule:
    """A limiter, the requests it applies to (path None: all) and its key scope (None: the
    caller passes the key to HttpLimiter.decide)."""

    def __new__(
        cls,
        name: str,
        limiter: Limiter,
        *,
        path: str | None = None,
        methods: Sequence[str] | None = None,
        key: str | None = "ip",
        cost: int = 1,
        shadow: bool = False,
    ) -> HttpRule: ...
    @property
    def name(self) -> str: ...
    @property
    def path(self) -> str | None: ...
    @property
    def methods(self) -> list[str]: ...
    @property
    def key(self) -> str | None: ...
    @property
    def limiter(self) -> Limiter: ...
    @property
    def cost(self) -> int: ...
    @property
    def shadow(self) -> bool:
        """Decides and counts, but never denies and sends no headers."""

@final
class RuleDecision:
    @property
    def rule(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def decision(self) -> Decision: ...
    @property
    def shadow(self) -> bool: ...

@final
class HttpDecision:
    @property
    def matched(self) -> bool: ...
    @property
    def allowed(self) -> bool: ...
    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> list[tuple[str, str]]: ...
    @property
    def body(self) -> str | None: ...
    @property
    def key(self) -> str | None: ...
    @property
    def forwarded_for_ignored(self) -> bool: ...
    @property
    def user_verified(self) -> bool: ...
    @property
    def api_key_rejected(self) -> bool: ...
    @property
    def fallback(self) -> bool: ...
    @property
    def decisions(self) -> list[RuleDecision]: ...
    @property
    def shadow_denied(self) -> list[str]:
        """Shadow rules that would have denied this request (it was not denied for them)."""
    @property
    def store_errors(self) -> list[tuple[str, str]]: ...
    @property
    def key_errors(self) -> list[tuple[str, str]]: ...

@final
class HttpLimiter:
    """Rules decided together for each request, with the client-IP, JWT and header settings."""

    def __new__(
        cls,
        rules: Sequence[HttpRule],
        *,
        trusted_proxies: Sequence[str] | None = None,
        ipv6_prefix: int | None = None,
        jwt: Mapping[str, Any] | None = None,
        headers: str = "draft-10",
        forwarded_header: str = "x-forwarded-for",
        trust_unix_socket: bool = False,
        api_keys: Mapping[str, Any] | None = None,
    ) -> HttpLimiter: ...
    @property
    def rules(self) -> list[HttpRule]: ...
    @property
    def forwarded_header(self) -> str: ...
    @property
    def needs_route(self) -> bool: ...
    @property
    def api_key_rules(self) -> list[str]: ...
    @property
    def custom_key_rules(self) -> list[str]: ...
    def matches(self, method: str, path: str) -> bool: ...
    def matching(self, method: str, path: str) -> list[str]: ...
    def decide(
        self,
        method: str,
        path: str,
        peer: str,
        *,
        route: str | None = None,
        forwarded_for: str | None = None,
        authorization: str | None = None,
        api_key: str | None = None,
        keys: Mapping[str, str] | None = None,
        traceparent: str | None = None,
        api_key_verdict: bool | str | None = None,
    ) -> Awaitable[HttpDecision]: ...
    def decide_sync(
        self,
        method: str,
        path: str,
        peer: str,
        *,
        route: str | None = None,
        forwarded_for: str | None = None,
        authorization: str | None = None,
        api_key: str | None = None,
        keys: Mapping[str, str] | None = None,
        traceparent: str | None = None,
        api_key_verdict: bool | str | None = None,
    ) -> HttpDecision: ...
    def client_ip(self, peer: str, forwarded_for: str | None = None) -> tuple[str, bool]: ...
    def verified_user(self, authorization: str | None) -> str | None: ...

def rate_limit_headers(decision: Decision, style: str = "draft-10") -> list[tuple[str, str]]: ...
def limited_body(decision: Decision) -> str: ...

# floodwall.telemetry (process-wide)

def configure_tracing(
    otlp_endpoint: str | None = None,
    sampling_ratio: float = 1.0,
    record_raw_keys: bool = False,
    service_name: str = "floodwall",
) -> None: ...
def disable_tracing() -> None: ...
def install_json_logs(filter: str = "floodwall=warn") -> None: ...
def prometheus_text() -> str: ...
def _metric_families() -> list[tuple[str, str, str, list[tuple[str, list[tuple[str, str]], float]]]]: ...
