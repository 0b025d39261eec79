"""The main job is reproducible: two runs of ``experiments/pg_sweep.py --smoke`` with the same seed
write the same per-trial metrics, the same best trial, the same held-out table and the same
DestinationRules. Only what cannot be the same is set aside: wall times, the output directory
(replaced by a placeholder) and the dashboard URL."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.experiments._processes import run_script

#: results.json keys that are about the run, not its results.
RUN_SPECIFIC = ("sweep_wall_s", "validation_wall_s", "held_out_eval_wall_s")


def comparable_results(out: Path) -> dict[str, Any]:
    """results.json with the output directory replaced by ``<OUT>`` and the wall times and
    dashboard URL dropped."""
    results = json.loads((out / "results.json").read_text().replace(str(out), "<OUT>"))
    for key in RUN_SPECIFIC:
        assert key in results, key  # still written, just not compared
        del results[key]
    results["ray"].pop("dashboard_url")
    return results


def comparable_markdown(out: Path) -> str:
    """results.md with the output directory replaced and the wall-time line dropped."""
    text = (out / "results.md").read_text().replace(str(out), "<OUT>")
    return re.sub(r"^Sweep wall time .*$", "", text, flags=re.MULTILINE)


@pytest.mark.slow
def test_two_smoke_sweeps_with_the_same_seed_write_the_same_results(tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        proc = run_script("pg_sweep", "--smoke", "--seed", "3", "--output", str(out),
                          timeout_s=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        runs.append(out)
    a, b = (comparable_results(out) for out in runs)
    # every trial ran its whole budget (no early stopping), by grid position
    assert [t["iterations"] for t in a["trials"]] == [2, 2]
    assert [t["trial"] for t in a["trials"]] == [t["trial"] for t in b["trials"]]
    for ta, tb in zip(a["trials"], b["trials"], strict=True):
        assert ta == tb, (ta, tb)
    assert a["best"] == b["best"]
    assert a["held_out"] == b["held_out"]
    assert a == b
    assert comparable_markdown(runs[0]) == comparable_markdown(runs[1])
    assert ((runs[0] / "best_destination_rules.yaml").read_text()
            == (runs[1] / "best_destination_rules.yaml").read_text())
