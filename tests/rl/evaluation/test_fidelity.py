"""rl.evaluation.fidelity and experiments/fidelity.py: the configuration draw, the seeds, the
comparison, the summary and the command line.

The local mesh itself is exercised by ``tests/envs/backends/local/test_e2e.py``; here the
simulator stands in for both sides of a pair where a report is needed.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import pytest

import rl.evaluation.fidelity as fid
from envs.backends.base import LoadSpec
from envs.backends.sim import SimMesh
from tests.experiments._processes import run_script


def test_configurations_are_declared_seeded_and_span_tight_to_loose() -> None:
    configs = fid.configurations(14, seed=0)
    assert configs[0] == (None, [])  # Istio's defaults first
    assert [u for u, _ in configs[1:]] == [*fid.UPPERS, fid.UPPERS[0]]
    assert fid.configurations(14, seed=0) == configs
    assert fid.configurations(14, seed=1) != configs
    for upper, rules in configs[1:]:
        assert rules, "every random configuration sets rules"
        for r in rules:
            assert r.connection_pool.tcp.max_connections <= upper


def test_run_seeds_never_collide() -> None:
    seeds = {fid.run_seed(3, li, ci, k) for li in range(3) for ci in range(60)
             for k in range(100)}
    assert len(seeds) == 3 * 60 * 100


def test_compare_same_report_is_exact() -> None:
    mesh = SimMesh(fid.configurations(2, 0)[1][1])
    load = LoadSpec(users=3, requests=200)
    report = mesh.run_load(load, seed=4)
    pair = fid.compare(1, load, 0, 4, report, report, True)
    assert pair.sim_score == pair.local_score
    assert set(pair.failure_errors_pts.values()) == {0.0}
    assert set(pair.p99_ratios.values()) == {1.0}
    assert not set(pair.failure_errors_pts) - set(fid.COMPARED)


def _scores(config: int, local: list[float], sim: list[float],
            ceiling: list[list[float]]) -> object:
    return fid.ConfigScores(config=config, upper=8, users=5, requests=100, local=local,
                            sim=sim, sim_cluster=[-s for s in sim], sim_ceiling_draws=ceiling,
                            local_failure_pct=[0.0] * len(local),
                            sim_failure_pct=[0.0] * len(sim))


def _pair(config: int, error: float, ratio: float) -> object:
    return fid.Pair(config=config, users=5, requests=100, repeat=0, run_seed=config,
                    sim_score=0.0, local_score=0.0, sim_failure_pct=0.0, local_failure_pct=0.0,
                    failure_errors_pts={"GET /": error}, p99_ratios={"GET /": ratio},
                    local_healthy=True, local_frontend_crashes=0, sim_frontend_crashes=0)


def test_summarise_ranks_means_and_reports_spread_and_ceiling() -> None:
    # the local means rank like the simulator's; the cluster scores are the reverse
    scores = [_scores(i, [-100.0 * i - 5, -100.0 * i + 5], [-100.0 * i] * 4,
                      [[-100.0 * i, -100.0 * i], [-100.0 * (3 - i)] * 2]) for i in range(4)]
    pairs = [_pair(i, error=float(i), ratio=0.5 + 0.25 * i) for i in range(4)]
    s = fid.summarise(scores, pairs)
    assert s["rho"] == pytest.approx(1.0) and s["rho_cluster"] == pytest.approx(-1.0)
    assert (s["ceiling_min"], s["ceiling_max"]) == (pytest.approx(-1.0), pytest.approx(1.0))
    assert s["local_spread_median"] == pytest.approx(10.0)
    assert s["median_failure_error_pts"] == pytest.approx(1.5)
    assert s["median_p99_ratio"] == pytest.approx(0.875)
    assert (s["configs"], s["repeats"]) == (4, 2)
    assert fid.meets_targets(s)
    assert not fid.meets_targets({**s, "rho": 0.89})
    assert not fid.meets_targets({**s, "median_p99_ratio": 1.31})
    assert not fid.meets_targets({**s, "median_failure_error_pts": 5.1})


def test_append_section_goes_under_fidelity(tmp_path: Path) -> None:
    bench = tmp_path / "B.md"
    bench.write_text("# B\n\n## Fidelity\n\nintro\n\n### old\n\n## Transfer\n\nt\n")
    fid.append_section(bench, "### new\n")
    text = bench.read_text()
    assert text.index("### old") < text.index("### new") < text.index("## Transfer")
    fresh = tmp_path / "C.md"
    fid.append_section(fresh, "### first\n")
    assert "## Fidelity" in fresh.read_text() and "### first" in fresh.read_text()


def test_parse_load() -> None:
    assert fid.parse_load("10:300") == LoadSpec(users=10, requests=300)
    with pytest.raises(argparse.ArgumentTypeError, match="USERS:REQUESTS"):
        fid.parse_load("ten")


_run = functools.partial(run_script, "fidelity", timeout_s=120)


def test_bad_flags() -> None:
    proc = _run("--configs", "2")
    assert proc.returncode == 2 and "at least 3" in proc.stderr
    proc = _run("--repeats", "9", "--sim-seeds", "4")
    assert proc.returncode == 2 and "--repeats <= --sim-seeds" in proc.stderr


def test_run_comparison_against_an_identical_stand_in_is_exact() -> None:
    # The simulator on the same platform stands in for the local mesh: the same seeds give the
    # same reports, so every pair agrees exactly and the ranks match.
    platform = fid.profile.platform_named("loopback")
    loads = [LoadSpec(users=3, requests=120)]
    run = fid.run_comparison(SimMesh(platform=platform), fid.configurations(4, 0), loads,
                             repeats=1, sim_seeds=2, seed=0, platform=platform)
    assert run.failures == [] and len(run.scores) == 4 and len(run.pairs) == 4
    assert all(p.sim_score == p.local_score for p in run.pairs)
    assert all(c.local == c.sim[:1] for c in run.scores)
    assert all(len(c.sim_ceiling_draws) == fid.CEILING_DRAWS for c in run.scores)
    section = fid.markdown(run.scores, run.pairs, loads, 1, 2, "cmd", platform, 6.0)
    assert "(`cmd`, 0.1 min)" in section and "| 3 / 120 | 4 × 1 |" in section
