"""Rucio's configuration for every environment from one description (deploy/rucio-config.yaml).

The local grid renders the `local` view into rucio.cfg; the production Helm values carry the
`production` view as their `config:` (deploy/production/helm/render.py writes it, a test compares).
"""

from __future__ import annotations

from pathlib import Path
from string import Template
from typing import Any

import yaml

from .config import REPO_ROOT

DESCRIPTION = REPO_ROOT / "deploy" / "rucio-config.yaml"
ENVIRONMENTS = ("local", "production")

Sections = dict[str, dict[str, str]]


def load(path: Path = DESCRIPTION) -> dict[str, dict[str, Any]]:
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of sections")
    for section, options in data.items():
        if not isinstance(options, dict):
            raise ValueError(f"{path}: section [{section}] must be a mapping of options")
        for option, value in options.items():
            if isinstance(value, dict) and (not value or set(value) - set(ENVIRONMENTS)):
                raise ValueError(f"{path}: [{section}] {option}: per-environment keys must be among "
                                 f"{', '.join(ENVIRONMENTS)}, got {sorted(value)}")
    return data


def view(env: str, description: dict[str, dict[str, Any]] | None = None) -> Sections:
    """The options one environment sets, as strings (what rucio.cfg holds), sections without options left out."""
    if env not in ENVIRONMENTS:
        raise ValueError(f"unknown environment {env!r}: one of {', '.join(ENVIRONMENTS)}")
    out: Sections = {}
    for section, options in (description if description is not None else load()).items():
        chosen = {}
        for option, value in options.items():
            if isinstance(value, dict):
                if env not in value:
                    continue
                value = value[env]
            chosen[option] = str(value)
        if chosen:
            out[section] = chosen
    return out


def render_ini(sections: Sections, values: dict[str, str] | None = None, *, header: str = "") -> str:
    """rucio.cfg text; `values` fill the $placeholders (every placeholder must be given)."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for section, options in sections.items():
        lines += ["", f"[{section}]"]
        for option, value in options.items():
            lines.append(f"{option} = {Template(value).substitute(values or {})}")
    return "\n".join(lines).lstrip("\n") + "\n"
