"""Dependencies of the routes: the gateway of the app, and the API key check."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from service.contract.errors import Unauthorized

from .gateway import Gateway


async def get_gateway(request: Request) -> Gateway:
    # async: FastAPI would run a plain function in the thread pool, a hop on every request
    gateway: Gateway = request.app.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


async def require_api_key(request: Request) -> None:
    """Every route but health needs a key when R2_API_KEYS is set (Bearer token or X-API-Key)."""
    keys = request.app.state.settings.api_key_values()
    if not keys:
        return
    supplied = request.headers.get("x-api-key")
    auth = request.headers.get("authorization", "")
    if supplied is None and auth.lower().startswith("bearer "):
        supplied = auth[7:].strip()
    if not supplied or not any(hmac.compare_digest(supplied.encode(), k.encode()) for k in keys):
        raise Unauthorized("missing or wrong API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
                           headers={"WWW-Authenticate": "Bearer"})
