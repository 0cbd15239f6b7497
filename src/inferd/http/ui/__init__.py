"""The web UI: plain HTML, CSS and ES modules under ``static/`` (no build step).

The pages call inferd's own public API with the key the user types once (kept in the
browser's sessionStorage); the server adds nothing but the files. Charts use the vendored
uPlot under ``static/vendor/``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.responses import FileResponse, RedirectResponse, Response

from inferd.errors import NotFound

STATIC = Path(__file__).parent / "static"
# Every file the UI may serve, found once at import: a request can only name one of these,
# so no path in a URL can reach outside the folder.
FILES = {p.relative_to(STATIC).as_posix(): p for p in STATIC.rglob("*") if p.is_file()}
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def root() -> Response:
    return RedirectResponse("/ui/")


@router.get("/ui")
@router.get("/ui/")
async def index() -> Response:
    return FileResponse(STATIC / "index.html", media_type=TYPES[".html"],
                        headers={"Cache-Control": "no-cache"})


@router.get("/ui/static/{name:path}")
async def static(name: str) -> Response:
    path = FILES.get(name)
    if path is None:
        raise NotFound(f"No UI file named '{name}'.")
    return FileResponse(path, media_type=TYPES.get(path.suffix, "text/plain; charset=utf-8"),
                        headers={"Cache-Control": "no-cache"})
