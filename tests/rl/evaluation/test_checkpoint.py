"""The checkpoint loader (rl/evaluation/checkpoint.py): user errors, not tracebacks.

Loading a real checkpoint is covered by ``tests/experiments/test_evaluate.py`` (a trained one)
and ``tests/experiments/test_pg_sweep.py`` (the sweep's best trial).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rl.evaluation.checkpoint import CheckpointError, best_checkpoint, load_policy, module_dir


def test_missing_or_wrong_checkpoints_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        best_checkpoint(tmp_path / "missing.json")
    with pytest.raises(CheckpointError, match="not an RLlib Algorithm checkpoint"):
        load_policy(tmp_path)


def test_best_checkpoint_of_a_sweep(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"best": {}}))
    with pytest.raises(CheckpointError, match="no best trial checkpoint"):
        best_checkpoint(results)
    results.write_text(json.dumps({"best": {"checkpoint": "/x/ckpt"}}))
    assert best_checkpoint(results) == Path("/x/ckpt")


def test_module_dir_is_rllibs_layout(tmp_path: Path) -> None:
    assert module_dir(tmp_path) == (tmp_path / "learner_group" / "learner" / "rl_module"
                                    / "default_policy")
