"""rl.evaluation.throughput (behind experiments/throughput.py): the bare layers and the table."""

from __future__ import annotations

import pytest

import rl.evaluation.throughput as tp


def test_throughput_bare_layers_and_table() -> None:
    sim = tp.time_simulator(users=5, steps=4)
    env = tp.time_mesh_env(users=5, steps=6)
    assert (sim.steps, env.steps) == (4, 6) and sim.wall_s > 0 and env.wall_s > 0
    two = tp.Layer("two runners", steps=100, wall_s=0.5, workers=2)
    assert two.steps_per_s == pytest.approx(200.0)
    assert two.ms_per_step == pytest.approx(5.0) and two.worker_ms_per_step == pytest.approx(10.0)
    text = tp.markdown([tp.Layer("sim", 100, 0.2), two], "cmd", "today", 5, (1.0, 2.0, 3.0))
    assert "| two runners | 100 | 0.5 | **200** | 5.00 | 10.00 | +8.00 | — |" in text
    assert sim.cpu_s is not None and sim.cpu_s > 0
    assert tp.median_round([tp.Layer("x", 1, w) for w in (3.0, 1.0, 2.0)]).wall_s == 2.0
    assert "`cmd`" in text and "load average 1.0 / 2.0" in text
