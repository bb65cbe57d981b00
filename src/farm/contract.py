"""The served API contract: the OpenAPI document as the server behaves, and its docs pages.

FastAPI documents a 422 ``HTTPValidationError`` for every operation that takes input; this
server answers invalid input with 400 and an ``ErrorBody`` (see ``app._install_error_handlers``),
so the document says that instead. Swagger UI (``/docs``) and ReDoc (``/redoc``) load their
assets from ``/static/docs``, files of the ``fastapi-offline`` package (Swagger UI: Apache-2.0,
ReDoc: MIT), never from a CDN.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/static/docs"
_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")
_ERROR_BODY = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
_INVALID_INPUT = {
    "description": "Invalid input; the message says what to fix",
    "content": _ERROR_BODY,
}
# Every route that takes a token: an OIDC ID token cannot be checked while the issuer is down.
_UNAVAILABLE = {
    "description": "A backend this needs is unavailable (for an OIDC ID token: the issuer's "
    "keys cannot be fetched; Retry-After says when to retry); says why",
    "content": _ERROR_BODY,
}


def install_contract(app: FastAPI) -> None:
    """Serve the corrected OpenAPI document, Swagger UI and ReDoc with local assets."""
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.mount(ASSETS, StaticFiles(directory=_assets_dir()), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=str(app.openapi_url),
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=str(app.openapi_url),
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS}/favicon.png",
            with_google_fonts=False,
        )


def _assets_dir() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        spec = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        for operations in spec.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.get("responses", {})
                if responses.pop("422", None) is not None:
                    responses.setdefault("400", _INVALID_INPUT)
                if "401" in responses:
                    responses.setdefault("503", _UNAVAILABLE)
        schemas = spec.get("components", {}).get("schemas", {})
        for name in _VALIDATION_SCHEMAS:
            schemas.pop(name, None)
        app.openapi_schema = spec
    return app.openapi_schema
