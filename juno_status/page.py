"""The status page: one self-contained HTML document (inline CSS, JS and SVG; nothing fetched from
anywhere but its own server's /api/status).

The status dict is embedded in the page as JSON and drawn by the script, so the served page (which
then refreshes from /api/status) and the static report (`juno-dci report --html`) are the same page.
Numbers carry data-* attributes with their exact values, for tests and for anyone scraping the page.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_ASSETS = Path(__file__).resolve().parent / "assets"


def _embed(value: Any) -> str:
    """JSON safe inside <script type="application/json">: no '<', '>' or '&' can end the element."""
    return (json.dumps(value, separators=(",", ":"))
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def render_page(status: dict[str, Any] | None, *, live: bool, refresh_s: float = 10.0, error: str | None = None) -> str:
    template = (_ASSETS / "status.html").read_text(encoding="utf-8")
    config = {"live": live, "refresh_s": refresh_s, "error": error}
    return (template
            .replace("/*CSS*/", (_ASSETS / "status.css").read_text(encoding="utf-8"))
            .replace("/*JS*/", (_ASSETS / "status.js").read_text(encoding="utf-8"))
            .replace("/*CONFIG*/", _embed(config))
            .replace("/*DATA*/", _embed(status)))
