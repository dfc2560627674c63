"""The web UI's files: HTML shells (one layout plus a body per page) and the static assets.

Shells carry no data: each page's JavaScript module fetches it from the JSON API with the
user's bearer token, so a shell depends only on its page name and can be rendered once.
Everything is read from this package (``dashboards/ui/templates`` and ``dashboards/ui/static``)
into memory: serving never touches the file system, so no request path can reach another file.
``server/routes/ui.py`` serves them; nothing here knows about HTTP.
"""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass
from pathlib import Path
from string import Template

UI_DIR = Path(__file__).parent / "ui"
TEMPLATES_DIR = UI_DIR / "templates"
STATIC_DIR = UI_DIR / "static"
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".png": "image/png",
}
"""Static file types the UI ships (anything else in the folder is not served)."""


@dataclass(frozen=True, slots=True)
class Page:
    """One HTML shell: its template and script (``name``), tab title and highlighted nav item."""

    name: str
    title: str
    nav: str


PAGES: dict[str, Page] = {p.name: p for p in (
    Page("home", "Home", "home"),
    Page("runs", "Runs", "runs"),
    Page("run", "Run", "runs"),
    Page("diff", "Diff", "runs"),
    Page("diff_latest", "Diff with the previous run", "runs"),
    Page("approvals", "Approvals", "approvals"),
    Page("policies", "Policies", "policies"),
    Page("audit", "Audit log", "audit"),
    Page("analytics", "Analytics", "analytics"),
    Page("login", "Sign in", "login"),
)}


@dataclass(frozen=True, slots=True)
class StaticFile:
    """A static asset held in memory with its media type and a strong ETag."""

    content: bytes
    media_type: str
    etag: str


def render_page(name: str, *, templates_dir: Path = TEMPLATES_DIR) -> str:
    """The HTML shell of page ``name`` (one of :data:`PAGES`).

    Raises:
        KeyError: ``name`` is not a page.
    """
    page = PAGES[name]
    layout = Template((templates_dir / "layout.html").read_text(encoding="utf-8"))
    body = (templates_dir / f"{page.name}.html").read_text(encoding="utf-8")
    return layout.substitute(title=html.escape(page.title), page=page.name, nav=page.nav, content=body)


def render_all_pages(*, templates_dir: Path = TEMPLATES_DIR) -> dict[str, str]:
    """Every shell by page name."""
    return {name: render_page(name, templates_dir=templates_dir) for name in PAGES}


def load_static_files(*, static_dir: Path = STATIC_DIR) -> dict[str, StaticFile]:
    """Every servable file under ``static_dir`` by its relative POSIX path (``js/api.js``)."""
    found = {}
    for path in sorted(static_dir.rglob("*")):
        media_type = MEDIA_TYPES.get(path.suffix)
        if media_type is None or not path.is_file():
            continue
        content = path.read_bytes()
        etag = '"' + hashlib.sha256(content).hexdigest()[:32] + '"'
        found[path.relative_to(static_dir).as_posix()] = StaticFile(content, media_type, etag)
    return found
