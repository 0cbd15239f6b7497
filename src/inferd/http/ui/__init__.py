"""The web UI: Home, Models, Playground, API Keys and Monitoring, as one static page.

The page is plain HTML and JavaScript that call inferd's own public API with the API key the
user enters (kept in the browser's localStorage); the server adds nothing but the files.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.responses import FileResponse, RedirectResponse, Response

from inferd.errors import NotFound

STATIC = Path(__file__).parent / "static"
FILES = {p.name: p for p in STATIC.iterdir() if p.is_file()}
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8"}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def root() -> Response:
    return RedirectResponse("/ui/")


@router.get("/ui")
@router.get("/ui/")
async def index() -> Response:
    return FileResponse(STATIC / "index.html", media_type=TYPES[".html"],
                        headers={"Cache-Control": "no-cache"})


@router.get("/ui/static/{name}")
async def static(name: str) -> Response:
    path = FILES.get(name)
    if path is None:
        raise NotFound(f"No UI file named '{name}'.")
    return FileResponse(path, media_type=TYPES.get(path.suffix, "application/octet-stream"),
                        headers={"Cache-Control": "no-cache"})
