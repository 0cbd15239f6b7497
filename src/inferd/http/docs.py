"""``/openapi.json``, ``/docs`` (Swagger UI) and ``/redoc``, with their scripts and styles
served from the package (vendored by ``scripts/vendor-docs.sh``), so they work without
internet access."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response

from inferd.errors import NotFound
from inferd.http.operation import endpoint

STATIC = Path(__file__).parent / "docs_static"
PREFIX = "/docs/static/"
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".png": "image/png"}
FILES = {p.name: p for p in STATIC.iterdir() if p.suffix in TYPES} if STATIC.is_dir() else {}

router = APIRouter(include_in_schema=False)


@endpoint(router, "GET", "/openapi.json", access="public")
async def openapi_document(request: Request) -> Response:
    """The document the app builds once (``inferd.http.openapi``)."""
    return JSONResponse(request.app.openapi())


@endpoint(router, "GET", "/docs", access="public")
async def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title="inferd API",
                               swagger_js_url=PREFIX + "swagger-ui-bundle.js",
                               swagger_css_url=PREFIX + "swagger-ui.css",
                               swagger_favicon_url=PREFIX + "favicon-32x32.png")


@endpoint(router, "GET", "/redoc", access="public")
async def redoc() -> HTMLResponse:
    return get_redoc_html(openapi_url="/openapi.json", title="inferd API",
                          redoc_js_url=PREFIX + "redoc.standalone.js",
                          redoc_favicon_url=PREFIX + "favicon-32x32.png",
                          with_google_fonts=False)


@endpoint(router, "GET", PREFIX + "{name}", access="public")
async def asset(name: str) -> Response:
    path = FILES.get(name)
    if path is None:
        raise NotFound(f"No documentation asset named '{name}'.")
    return FileResponse(path, media_type=TYPES[path.suffix],
                        headers={"Cache-Control": "public, max-age=86400"})
