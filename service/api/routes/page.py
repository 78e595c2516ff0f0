"""The web page at ``/``: static files of ``service/api/page/`` and the plotting library from its PyPI package.

The page is plain HTML + ES modules talking to the same API (so it works against any deployment that serves it);
nothing is loaded from the internet: the plotting library is the ``plotly.min.js`` that the pinned ``plotly``
package installs. Static files need no API key: the page asks for one when the API answers 401.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from service.contract.errors import NotFound, Unavailable

router = APIRouter(include_in_schema=False)

PAGE_DIR = Path(__file__).resolve().parents[1] / "page"
# Only these files are served (a fixed list: no path from the request ever reaches the filesystem).
PAGE_FILES = {p.name: p for p in PAGE_DIR.iterdir() if p.suffix in {".html", ".js", ".css", ".svg"}}
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
               ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}


def plotly_bundle() -> Path | None:
    """``plotly.min.js`` of the installed ``plotly`` package, found without importing it."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "package_data" / "plotly.min.js"
        if path.is_file():
            return path
    return None


@router.get("/")
async def index() -> FileResponse:
    """The page."""
    return FileResponse(PAGE_FILES["index.html"], media_type=MEDIA_TYPES[".html"])


@router.get("/page/vendor/plotly.min.js")
async def plotly_js() -> FileResponse:
    """The plotting library, from the installed package."""
    path = plotly_bundle()
    if path is None:
        raise Unavailable("the page's plotting library is not installed: pip install the plotly pinned in "
                          "service/api/requirements.txt")
    return FileResponse(path, media_type=MEDIA_TYPES[".js"], headers={"Cache-Control": "public, max-age=86400"})


@router.get("/page/{name}")
async def page_file(name: str) -> FileResponse:
    """One of the page's own files (scripts, style)."""
    path = PAGE_FILES.get(name)
    if path is None:
        raise NotFound(f"no page file named {name[:80]!r}")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers={"Cache-Control": "no-cache"})
