"""Putting juno-prod's payloads into a release directory (the local grid's stand-in for CVMFS; tests)."""

from __future__ import annotations

import shutil
from pathlib import Path

PAYLOADS = Path(__file__).with_name("payloads")


def install(release_dir: Path) -> list[Path]:
    """Copy every payload into <release_dir>/bin/ (executable); return the paths."""
    bin_dir = release_dir / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for src in sorted(PAYLOADS.iterdir()):
        if src.is_file() and not src.name.startswith(("_", ".")):
            dest = bin_dir / src.name
            shutil.copy2(src, dest)
            dest.chmod(0o755)
            out.append(dest)
    return out
