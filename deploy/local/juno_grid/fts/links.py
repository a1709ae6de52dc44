"""Which copy mode each link uses, as FTS3 configures it per link: an operator's file, re-read on change.

`<state>/links.json`:
    {"default": "stream", "schemes": {"davs": "tpc"}, "links": {"127.0.0.1:12194>127.0.0.1:12196": "push"}}
A link is source host:port > destination host:port (the storages' endpoints, any protocol); the modes are
gfal_copy.MODES (tpc = HTTP-TPC pull or XRootD TPC, push = HTTP-TPC push, stream = through the service).
A copy takes its link's mode, else its source scheme's, else the default. A missing file means the service's
--copy-mode and --scheme-mode. A bad file is refused with the reason in the service's log, and the previous
modes stay.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .jsonlog import log

MODES = ("tpc", "push", "stream")


@dataclass(frozen=True)
class Modes:
    default: str
    links: dict[str, str] = field(default_factory=dict)
    schemes: dict[str, str] = field(default_factory=dict)

    def mode_for(self, source_url: str, dest_url: str) -> str:
        src = urlsplit(source_url)
        link = f"{src.netloc}>{urlsplit(dest_url).netloc}"
        return self.links.get(link) or self.schemes.get(src.scheme) or self.default


def parse(text: str, default: str, schemes: dict[str, str] | None = None) -> Modes:
    """The file's modes; ValueError saying what is wrong and where."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or set(data) - {"default", "schemes", "links"}:
        raise ValueError("expected an object with keys 'default', 'schemes' and 'links'")
    mode = data.get("default", default)
    if mode not in MODES:
        raise ValueError(f"default {mode!r}: expected one of {', '.join(MODES)}")
    links = data.get("links", {})
    if not isinstance(links, dict):
        raise ValueError("'links' must map 'src-host:port>dst-host:port' to a mode")
    for link, m in links.items():
        if not isinstance(link, str) or link.count(">") != 1 or m not in MODES:
            raise ValueError(f"link {link!r}: {m!r}; expected 'host:port>host:port': one of {', '.join(MODES)}")
    by_scheme = {**(schemes or {}), **data.get("schemes", {})} if isinstance(data.get("schemes", {}), dict) else None
    if by_scheme is None or any(not isinstance(k, str) or m not in MODES for k, m in by_scheme.items()):
        raise ValueError(f"'schemes' must map a URL scheme to one of {', '.join(MODES)}")
    return Modes(mode, dict(links), by_scheme)


class LinkModes:
    """The modes in force: the file's when it exists and is valid, else the service's --copy-mode."""

    def __init__(self, path: Path | None, default: str, schemes: dict[str, str] | None = None) -> None:
        self.path = path
        self.default = default
        self.schemes = dict(schemes or {})
        self.current = Modes(default, {}, self.schemes)
        self._stamp: tuple[int, int] | None = None

    def get(self) -> Modes:
        if self.path is None:
            return self.current
        try:
            st = self.path.stat()
        except FileNotFoundError:
            if self._stamp is not None:
                self.current, self._stamp = Modes(self.default, {}, self.schemes), None
            return self.current
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self.current = parse(self.path.read_text(), self.default, self.schemes)
                log(logging.INFO, "link modes loaded", path=str(self.path), default=self.current.default,
                    schemes=self.current.schemes, links=self.current.links)
            except (OSError, ValueError) as exc:
                log(logging.ERROR, "link modes refused, previous ones kept", path=str(self.path), error=str(exc))
        return self.current


def set_link(path: Path, link: str, mode: str | None, default: str) -> None:
    """Set (None: remove) one link's mode in the file, as an operator would; the service picks it up."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {"default": default, "links": {}}
    links = dict(data.get("links", {}))
    if mode is None:
        links.pop(link, None)
    else:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
        links[link] = mode
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**data, "links": links}))
    tmp.replace(path)
