"""The web UI's files: every page renders, every script it loads and every module import is shipped, and
nothing inline (the pages' Content-Security-Policy forbids inline scripts and styles)."""

from __future__ import annotations

import re

import pytest

from dashboards.pages import (
    PAGES,
    STATIC_DIR,
    TEMPLATES_DIR,
    load_static_files,
    render_all_pages,
    render_page,
)

_IMPORT = re.compile(r"""^\s*import\s+(?:[^"']+\s+from\s+)?["']([^"']+)["']""", re.MULTILINE)
_ASSET = re.compile(r"""(?:src|href)="(/ui/static/[^"]+)\"""")


def test_every_page_renders_with_its_title_and_script() -> None:
    shells = render_all_pages()
    assert set(shells) == set(PAGES) == {p.stem for p in TEMPLATES_DIR.glob("*.html")} - {"layout"}
    for name, html in shells.items():
        assert f'<script type="module" src="/ui/static/js/pages/{name}.js"></script>' in html
        assert f"<title>{PAGES[name].title} · Traceward</title>" in html
        assert "$" not in html.split("<main", 1)[0]  # every placeholder of the layout was filled


def test_every_asset_a_page_loads_is_shipped() -> None:
    files = load_static_files()
    for html in render_all_pages().values():
        for asset in _ASSET.findall(html):
            assert asset.removeprefix("/ui/static/") in files, asset


def test_every_module_import_resolves_to_a_shipped_file() -> None:
    files = load_static_files()
    scripts = [name for name in files if name.endswith(".js")]
    assert "js/api.js" in scripts and len(scripts) >= 15
    for name in scripts:
        base = name.rsplit("/", 1)[0]
        for target in _IMPORT.findall(files[name].content.decode()):
            parts = f"{base}/{target}".split("/")
            resolved: list[str] = []
            for part in parts:
                if part == "..":
                    resolved.pop()
                elif part not in (".", ""):
                    resolved.append(part)
            assert "/".join(resolved) in files, f"{name} imports {target}, which is not shipped"


def test_no_inline_script_style_or_handler_in_the_templates() -> None:
    for path in TEMPLATES_DIR.glob("*.html"):
        text = path.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), f"inline script in {path.name}"
        assert "<style" not in text and " style=" not in text, f"inline style in {path.name}"
        assert not re.search(r"\son[a-z]+=", text), f"inline event handler in {path.name}"


def test_scripts_never_put_the_token_in_a_url_or_the_console() -> None:
    for path in (STATIC_DIR / "js").rglob("*.js"):
        text = path.read_text()
        assert "console." not in text, path.name
        assert not re.search(r"[?&](token|key|access_token)=", text), path.name


def test_static_files_have_strong_etags_and_known_types() -> None:
    files = load_static_files()
    assert files["css/traceward.css"].media_type.startswith("text/css")
    assert files["js/api.js"].media_type.startswith("text/javascript")
    assert all(f.etag.startswith('"') and len(f.etag) == 34 for f in files.values())


def test_an_unknown_page_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        render_page("nope")
