"""``scripts/latency_breakdown.py``: its flags, its busy-core reading, and its tables (built here
from simulator reports on both sides, so the local mesh is not started)."""

from __future__ import annotations

import subprocess
import sys
from types import ModuleType

import pytest

from tests.experiments._processes import REPO, _script_env, load_script

SCRIPT = REPO / "scripts" / "latency_breakdown.py"


def _module() -> ModuleType:
    return load_script(SCRIPT)


@pytest.mark.parametrize("args, message", [
    (["--rates", "0"], "--rates and --step-s must be positive"),
    (["--step-s", "-1"], "--rates and --step-s must be positive"),
    (["--local-runs", "0"], "--local-runs and --sim-seeds must be >= 1"),
])
def test_bad_flags_are_one_line_and_start_nothing(args: list[str], message: str) -> None:
    out = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, env=_script_env(),
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


def test_busy_cores_reads_the_share_of_non_idle_time() -> None:
    lb = _module()
    # 4 CPU-seconds passed over the machine's cores, 1 of them idle: 3/4 of every core busy
    cores = lb.os.cpu_count()
    assert lb.busy_cores((10.0, 2.0), (14.0, 3.0)) == pytest.approx(0.75 * cores)
    assert lb.busy_cores((5.0, 1.0), (5.0, 1.0)) == 0.0
    total, idle = lb.cpu_seconds()
    assert total > idle >= 0.0


def test_tables_put_local_beside_sim_with_their_ratio() -> None:
    from envs.backends.sim import SimMesh
    from rl.evaluation.fidelity import open_load

    lb = _module()
    spec = open_load(30.0, 2.0).spec
    sim = SimMesh(platform="loopback")
    runs = lb.RateRuns(30.0, local=[sim.run_load(spec, seed=s) for s in (0, 1)],
                       sim=[sim.run_load(spec, seed=s) for s in (0, 1)], busy_cores=[0.2, 0.4])
    text = lb.markdown([runs])
    assert "**30 req/s** (2 local runs, 2 simulator seeds; machine busy during the local runs: " \
           "0.30 of" in text
    assert "at most 0.40" in text
    assert "| GET / | own page |" in text and "| POST /orders | waits on callees |" in text
    assert "| front-end | " in text and "| payment | " in text
    # the same reports on both sides: every ratio is 1
    rows = [line for line in text.splitlines() if line.startswith("| ") and "(×" in line]
    assert rows and all("(×1.00)" in cell for line in rows
                        for cell in line.split("|") if "(×" in cell)
