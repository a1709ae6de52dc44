#!/usr/bin/env python3
"""Payload of etc/tasks/raw-checksum.yaml: size and adler32 of each input file, into summary.json.

Runs in the job's working directory, with the inputs in inputs/ (the wrapper copied them from the
site's storage). Plain python3: worker nodes have no project environment.
"""

import json
import os
import sys
import zlib


def adler32(path: str) -> str:
    value = 1
    with open(path, "rb") as fh:
        while chunk := fh.read(4 << 20):
            value = zlib.adler32(chunk, value)
    return f"{value & 0xFFFFFFFF:08x}"


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--job":
        print("usage: raw_checksum.py --job N FILE...", file=sys.stderr)
        return 2
    files = argv[3:]
    summary = {"job": int(argv[2]), "site": os.environ.get("JUNO_SITE"),
               "files": [{"name": os.path.basename(f), "bytes": os.path.getsize(f), "adler32": adler32(f)}
                         for f in files]}
    with open("summary.json", "w") as fh:
        json.dump(summary, fh, indent=1)
    print(f"job {argv[2]} at {summary['site']}: {len(files)} file(s) summarised")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
