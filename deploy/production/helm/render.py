"""Write the `config:` of the Helm values files from deploy/rucio-config.yaml (the one description).

    .venv/bin/python deploy/production/helm/render.py          # rewrite the values files
    .venv/bin/python deploy/production/helm/render.py --check  # exit 1 if either has drifted

Everything above the marker line in a values file is written by hand; everything below it is generated.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml
from juno_grid import rucio_config

HERE = Path(__file__).resolve().parent
VALUES = ("rucio-server.values.yaml", "rucio-daemons.values.yaml")
MARKER = "# --- generated from deploy/rucio-config.yaml by deploy/production/helm/render.py: do not edit below ---"


def rendered(text: str) -> str:
    head = text.split(MARKER, 1)[0].rstrip("\n")
    body = yaml.safe_dump({"config": rucio_config.view("production")}, sort_keys=False, default_flow_style=False)
    return f"{head}\n\n{MARKER}\n{body}"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    drifted = []
    for name in VALUES:
        path = HERE / name
        text = path.read_text()
        want = rendered(text)
        if text != want:
            drifted.append(name)
            if not check:
                path.write_text(want)
    if check and drifted:
        print(f"out of date: {', '.join(drifted)}; run {Path(__file__).relative_to(Path.cwd())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
