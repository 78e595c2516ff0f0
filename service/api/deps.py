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
    auth = request.headers.get("authorization", "")
    offered = [request.headers.get("x-api-key", "").strip(),  # an empty header is no key: it hides no Bearer
               auth[7:].strip() if auth.lower().startswith("bearer ") else ""]
    supplied = [key for key in offered if key]
    if not supplied or not any(hmac.compare_digest(s.encode(errors="replace"), k.encode())
                               for s in supplied for k in keys):
        raise Unauthorized("missing or wrong API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
                           headers={"WWW-Authenticate": "Bearer"})
