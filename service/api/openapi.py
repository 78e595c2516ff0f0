"""The API's OpenAPI document and its /docs page, both as the server really behaves.

The document adds what FastAPI cannot know: the JSON bodies the routes read themselves (:mod:`.bodies`), the
limits from the settings (queries per request, characters per query), and, when API keys are configured, the
security schemes (Bearer and ``X-API-Key``) on every route that needs a key, so /docs can send one.

/docs is Swagger UI 5 (it reads OpenAPI 3.1) from the pinned ``swagger-ui-bundle-v2`` package, served by the API
itself under ``/docs/assets``: it works without internet access.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from swagger_ui_bundle import swagger_ui_path

from service.contract.schemas import HighlightsRequest, MomentsRequest, SummaryRequest, TrainRequest
from service.contract.settings import Settings

BODY_MODELS: tuple[type[BaseModel], ...] = (MomentsRequest, HighlightsRequest, SummaryRequest, TrainRequest)
ASSETS = "/docs/assets"
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer <key>` (R2_API_KEYS)"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "`X-API-Key: <key>`"},
}


def build_openapi(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """The document: FastAPI's, plus the body schemas, the settings' limits and the security schemes."""
    doc = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for model in BODY_MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    queries = schemas["MomentsRequest"]["properties"]["queries"]
    queries["maxItems"] = settings.max_queries
    queries["items"]["maxLength"] = settings.max_query_chars
    for name in ("HighlightsRequest", "SummaryRequest"):
        query = schemas[name]["properties"]["query"]
        query["maxLength"] = settings.max_query_chars
        query.pop("default", None)  # omitted means the model's domain; null is refused
    if settings.api_keys:
        doc["components"]["securitySchemes"] = SECURITY_SCHEMES
        for operations in doc["paths"].values():
            for operation in operations.values():
                if "401" in operation.get("responses", {}):  # the routes that check the key declare its 401
                    operation["security"] = [{"bearer": []}, {"apiKey": []}]
    return doc


def install_docs(app: FastAPI, settings: Settings) -> None:
    """/openapi.json and an offline /docs (call with ``docs_url=None, openapi_url=None`` given to FastAPI)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app, settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_json() -> dict[str, Any]:
        return openapi()

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs",
                                   swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
                                   swagger_ui_parameters={"persistAuthorization": True,
                                                          "validatorUrl": None})  # no online validator

    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")
