"""The experts' web pages (unit survey, overview, explanation viewer, suspicious patches) and their static files.

The pages are plain HTML and ES modules under ``service/web``, each page's
content drawn inside the one shared ``layout.html``; they hold no
data and call the JSON API from the browser with the user's token, so they are
served without authentication and left out of the OpenAPI document.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse

from annotations.lexicon import (
    CANCER_ASSOCIATIONS,
    CATEGORIES,
    MAX_ANNOTATOR_LENGTH,
    MAX_DESCRIPTION_LENGTH,
    MAX_LABEL_LENGTH,
    PHENOMENA,
)

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
STATIC_DIR = WEB_DIR / "static"
# The pages change with the code, not per request; revalidating keeps a deployed upgrade visible at once.
_NO_STALE = {"Cache-Control": "no-cache"}
_MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".html": "text/html"}

router = APIRouter(prefix="/ui", tags=["pages"], include_in_schema=False)


@dataclass(frozen=True)
class Page:
    """A page: its ``<main>`` content in ``service/web/<name>.html``, drawn inside ``layout.html``.

    The layout holds what every page shares (head, skip link, site header
    with the sign-in form, alert region), so it is written once.
    """

    name: str
    title: str
    nav: str
    """The site header's link to this page, marked ``aria-current``."""


OVERVIEW = Page("overview", "Overview", "/ui/")
SURVEY = Page("survey", "Unit survey", "/ui/survey")
EXPLAIN = Page("explain", "Explain", "/ui/explain")
SUSPICIOUS = Page("suspicious", "Suspicious patches", "/ui/suspicious")


def _web_file(name: str) -> str:
    path = WEB_DIR / name
    if not path.is_file():  # an install without the package data, rather than a 500
        raise HTTPException(status_code=404, detail=f"the web pages are not installed: {path} is missing")
    return path.read_text(encoding="utf-8")


def render_page(page: Page) -> str:
    """The HTML of ``page``: its content inside the shared layout, its header link marked current."""
    html = Template(_web_file("layout.html")).substitute(
        title=page.title, script=f"{page.name}.js", main=_web_file(f"{page.name}.html")
    )
    return html.replace(f'<li><a href="{page.nav}">', f'<li><a href="{page.nav}" aria-current="page">', 1)


def _page(page: Page) -> HTMLResponse:
    return HTMLResponse(render_page(page), headers=_NO_STALE)


@router.get("")
async def ui_root() -> RedirectResponse:
    """Redirect to the overview, so relative links resolve under /ui/."""
    return RedirectResponse("/ui/")


@router.get("/")
async def overview_page() -> HTMLResponse:
    """The overview: how good the explanations are, ranked units per class and the unit embedding."""
    return _page(OVERVIEW)


@router.get("/units/{unit_id}")
async def survey_page(unit_id: Annotated[int, PathParam(ge=0)]) -> HTMLResponse:
    """The expert survey of one unit (the page reads the id from its URL)."""
    return _page(SURVEY)


@router.get("/survey")
async def survey_query_page() -> HTMLResponse:
    """The survey page addressed as ``/ui/survey?unit=<id>``."""
    return _page(SURVEY)


@router.get("/explain")
async def explain_page() -> HTMLResponse:
    """The explanation viewer with the region query."""
    return _page(EXPLAIN)


@router.get("/suspicious")
async def suspicious_page() -> HTMLResponse:
    """The hold-out set's most suspicious patches, each one click away from its region query."""
    return _page(SUSPICIOUS)


@router.get("/lexicon.json")
async def lexicon() -> JSONResponse:
    """The survey's controlled vocabularies, from ``annotations.lexicon``, so the pages never restate them."""
    body: dict[str, Any] = {
        "categories": list(CATEGORIES),
        "cancer_associations": list(CANCER_ASSOCIATIONS),
        "phenomena": list(PHENOMENA),
        "max_label_length": MAX_LABEL_LENGTH,
        "max_annotator_length": MAX_ANNOTATOR_LENGTH,
        "max_description_length": MAX_DESCRIPTION_LENGTH,
    }
    return JSONResponse(body, headers=_NO_STALE)


@router.get("/static/{path:path}")
async def static_file(path: str) -> FileResponse:
    """A file under ``service/web/static``; nothing outside it is reachable."""
    target = (STATIC_DIR / path).resolve()
    if not target.is_relative_to(STATIC_DIR) or not target.is_file():
        raise HTTPException(status_code=404, detail=f"no static file {path!r} under /ui/static")
    media_type = _MEDIA_TYPES.get(target.suffix)
    return FileResponse(target, media_type=media_type, headers=_NO_STALE)
