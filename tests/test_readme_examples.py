"""The README's `rucio` and `juno-policy` examples work as shown (its contract with newcomers).

Every ```console block of the README sections below is run, command by command, exactly as written
(`$ ` lines, from the repository root, as subprocesses: the command lines are the contract), and each
line shown after a command must appear in what it printed (stdout and stderr, colours removed):

  - a shown line matches a printed line that contains its words in that order (whitespace is free);
  - the words <id>, <date> and <time> stand for any one word;
  - lines of "..." only tell the reader that more was printed.

The one command that cannot repeat itself, making the example block, may instead answer what the
README says it answers the second time: "Data Identifier Already Exists".
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("## Naming, permissions and the replication policy", "## `juno-policy`")
WILDCARDS = {"<id>", "<date>", "<time>"}
ALREADY = "Data Identifier Already Exists"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Example:
    command: str
    shown: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.command.replace(".venv/bin/juno-grid exec -- ", "")


def examples(readme: str = (REPO / "README.md").read_text()) -> list[Example]:
    found: list[Example] = []
    in_section = in_console = False
    for line in readme.splitlines():
        if line.startswith("## "):
            in_section = line.startswith(SECTIONS)
        elif in_section and line.strip() == "```console":
            in_console = True
        elif in_console and line.strip() == "```":
            in_console = False
        elif in_console and line.startswith("$ "):
            found.append(Example(line[2:].strip()))
        elif in_console and line.strip() and line.strip() != "...":
            found[-1].shown.append(line.strip())
    return found


def shown_in(shown: str, printed: list[str]) -> bool:
    want = shown.split()
    for line in printed:
        words = line.split()
        for start in range(len(words) - len(want) + 1):
            if all(w in WILDCARDS or w == words[start + i] for i, w in enumerate(want)):
                return True
    return False


EXAMPLES = examples()


def test_the_readme_has_its_examples() -> None:
    commands = " ".join(e.command for e in EXAMPLES)
    for what in ("rucio did list", "rucio rule list", "rule add --copies 1 --rses CNAF-TAPE", "juno-policy plan",
                 "juno-policy explain"):
        assert what in commands, f"README lost its {what!r} example"
    assert all(e.command.startswith(".venv/bin/juno-grid exec -- ") for e in EXAMPLES)


@pytest.mark.grid
@pytest.mark.parametrize("example", EXAMPLES, ids=[e.id for e in EXAMPLES])
def test_readme_example(grid: Any, example: Example) -> None:
    run = subprocess.run(shlex.split(example.command), cwd=REPO, capture_output=True, text=True, timeout=600,
                         check=False)
    # Where the checkout is private (0700), .grid is a link to the real state dir: show it as the README does.
    state = str(grid.cfg.state_dir)
    printed = [_ANSI.sub("", line).replace(state, ".grid") for line in (run.stdout + "\n" + run.stderr).splitlines()]
    if ALREADY in run.stderr and " did add " in example.command and example.shown[0].startswith("Added "):
        return  # the second time, as the README says
    missing = [line for line in example.shown if not shown_in(line, printed)]
    assert not missing, (f"{example.command}\nexit {run.returncode}; not printed: {missing}\n"
                         f"printed:\n" + "\n".join(printed))


def test_matching_rules() -> None:
    printed = ["7aec03fa  juno_ingest  raw:block.X  OK[0/0/0]   IHEP-EOS   1   N/A   2026-12-21 23:45:31"]
    assert shown_in("<id> juno_ingest raw:block.X OK[0/0/0] IHEP-EOS 1 N/A <date>", printed)
    assert shown_in("IHEP-EOS 1", printed)
    assert not shown_in("<id> juno_ingest raw:block.X OK[0/0/0] IHEP-TAPE 1", printed)
    assert not shown_in("juno_ingest OK[0/0/0]", printed)  # words in order *and* together
