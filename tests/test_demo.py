"""`make demo`'s JUNO flow, small: raw files land at IHEP, a rule copies them to CNAF, checksums agree."""

from __future__ import annotations

import pytest
from juno_grid import demo

pytestmark = pytest.mark.grid


def test_demo_replicates_and_verifies(grid, capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--files", "2", "--mb", "1", "--timeout", "240"]) == 0
    out = capsys.readouterr().out
    assert "] rule OK (ok " in out
    assert out.count(" ok\n") == 2
    assert "All copies verified." in out
    # The analysis task ran over the block on HTCondor and its jobs finished.
    assert "== 4. analyst1 runs a task" in out
    assert "the task did not complete" not in out
