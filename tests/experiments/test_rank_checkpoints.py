"""``scripts/rank_checkpoints.py``: the rank correlation, and a path that is not a checkpoint
(the end-to-end run on a real checkpoint is in ``test_train_variant.py``, which makes one)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.experiments._processes import REPO, _script_env, load_script

rank_correlation = load_script(REPO / "scripts" / "rank_checkpoints.py").rank_correlation


def test_rank_correlation_is_spearmans() -> None:
    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # monotone but not linear: ranks, not values
    assert rank_correlation([1, 2, 3, 4], [1, 8, 27, 1000]) == pytest.approx(1.0)
    # ties take their mean rank: ranks (0.5, 0.5, 2, 3) against (0, 1, 2, 3)
    assert rank_correlation([5, 5, 6, 7], [1, 2, 3, 4]) == pytest.approx(0.9486833, abs=1e-6)
    assert math.isnan(rank_correlation([1], [2]))
    assert math.isnan(rank_correlation([1, 1, 1], [1, 2, 3]))


def test_a_path_that_is_not_a_checkpoint_is_one_line(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "rank_checkpoints.py"),
                          str(tmp_path)], cwd=REPO, env=_script_env(), capture_output=True,
                         text=True, timeout=300, check=False)
    assert out.returncode == 2
    assert out.stderr.startswith(f"rank_checkpoints: error: {tmp_path} is not an RLlib")
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
