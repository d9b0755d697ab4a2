"""A FastAPI app limited by floodwall: an app-wide limit per user (verified JWT, else client IP),
a stricter rule on POST /login, a per-route decorator keyed by user and endpoint, and a dependency.
Runs on the embedded store, or on Redis when FLOODWALL_REDIS_URL is set.

    ./scripts/demo.sh                       # venv, pip install ., uvicorn on 127.0.0.1:8000
    FLOODWALL_REDIS_URL=redis://127.0.0.1:6379 ./scripts/demo.sh
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import Depends, FastAPI

from floodwall import HttpDecision
from floodwall.fastapi import RateLimit, RateLimitMiddleware, Rule, limit

REDIS_URL = os.environ.get("FLOODWALL_REDIS_URL") or None  # None: the embedded in-process store
JWT = {"secret": os.environ.get("JWT_SECRET", "dev-secret-change-me")}
# Only these peers may tell us the client's address in X-Forwarded-For.
TRUSTED_PROXIES = [p for p in os.environ.get("TRUSTED_PROXIES", "").split(",") if p]

app = FastAPI(title="floodwall demo")
app.add_middleware(
    RateLimitMiddleware,
    name="site",
    limits=["10/second", "100/minute"],
    key="user",  # the `sub` of a JWT whose signature verifies, else the client IP
    jwt=JWT,
    trusted_proxies=TRUSTED_PROXIES,
    headers="both",  # RateLimit-Policy / RateLimit and X-RateLimit-*
    redis_url=REDIS_URL,
    rules=[Rule("/login", "3/minute", methods=["POST"], key="ip", name="login")],
)


@app.get("/")
async def hello() -> dict[str, Any]:
    return {"hello": "world", "store": "redis" if REDIS_URL else "embedded"}


@app.post("/login")
async def login() -> dict[str, bool]:
    return {"ok": True}


@app.get("/items/{item_id}")
@limit("5/10s", key="user+endpoint", jwt=JWT, redis_url=REDIS_URL, name="items")
async def item(item_id: int) -> dict[str, int]:
    return {"id": item_id}


search_limit = RateLimit("2/second", key="ip", redis_url=REDIS_URL, name="search")


@app.get("/search")
async def search(q: str = "", rl: HttpDecision = Depends(search_limit)) -> dict[str, Any]:
    return {"q": q, "key": rl.key}
