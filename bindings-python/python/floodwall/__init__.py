"""floodwall: distributed rate limiting on Redis or in process, decided by a Rust core.

    from floodwall import Limiter
    limiter = Limiter(["5/second", "100/minute"], redis_url="redis://127.0.0.1:6379")
    d = await limiter.check("user:42")
    if not d.allowed: ...  # d.retry_after seconds

FastAPI/Starlette support lives in ``floodwall.fastapi``; traces, logs and metrics in
``floodwall.telemetry``.
"""

from . import telemetry
from ._floodwall import (
    ConfigError,
    Decision,
    FloodwallError,
    HttpDecision,
    HttpLimiter,
    HttpRule,
    Limiter,
    ManualClock,
    RuleDecision,
    StoreError,
    Window,
    __version__,
    limited_body,
    rate_limit_headers,
)

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
    "limited_body",
    "rate_limit_headers",
    "telemetry",
]
