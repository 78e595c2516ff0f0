"""The API process: the app factory, its routes, the gateway to the store, uploads. No torch, no models.

``uvicorn --factory service.api:create_app`` (or ``r2tuning serve``) runs it.
"""

from .app import create_app

__all__ = ["create_app"]
