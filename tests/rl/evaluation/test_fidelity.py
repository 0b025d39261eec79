"""rl.evaluation.fidelity and experiments/fidelity.py: the configuration draw, the seeds, the
arithmetic of the targets on hand-made inputs (Spearman–Brown, split halves, corrected ρ, the
pick test, the Brier score, bootstrap intervals, per-cause cells), the rows and the verdicts,
the comparison loop and the command line's checks.

The real local mesh runs in ``tests/experiments/test_fidelity_local.py``; here the simulator
stands in for both sides where a report is needed.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import rl.evaluation.fidelity as fid
from envs.backends.base import LoadSpec
from envs.backends.sim import SimMesh
from tests._unwritable import assert_one_line_append_error, unwritable_path
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
             for k in range(fid.MAX_SEEDS_PER_SIDE)}
    assert len(seeds) == 3 * 60 * fid.MAX_SEEDS_PER_SIDE


def test_loads() -> None:
    load = fid.open_load(60.0, 10.0)
    assert load.spec == LoadSpec(users=0, requests=600, mode="open", arrival_rate_rps=60.0)
    assert "60 req/s" in load.label
    assert fid.closed_load(5, 600).spec == LoadSpec(users=5, requests=600)
    with pytest.raises(ValueError, match="positive"):
        fid.open_load(0.0, 10.0)
    assert fid.parse_closed_load("10:300") == (10, 300)
    with pytest.raises(Exception, match="USERS:REQUESTS"):
        fid.parse_closed_load("ten")


# ----- the arithmetic, on hand-made inputs -----------------------------------------------------

def test_spearman_brown() -> None:
    assert fid.spearman_brown(0.5, 2) == pytest.approx(2 / 3)
    assert fid.spearman_brown(0.5, 3) == pytest.approx(0.75)
    assert fid.spearman_brown(0.0, 2) == 0.0
    assert fid.spearman_brown(1.0, 2) == pytest.approx(1.0)
    assert fid.spearman_brown(-0.2, 2) == pytest.approx(-0.4 / 0.8)
    assert math.isnan(fid.spearman_brown(-1.0, 2))  # 1 + (k-1) r = 0
    assert np.allclose(fid.spearman_brown(np.array([0.5, 0.6]), 2), [2 / 3, 0.75])


def test_rank_correlation() -> None:
    assert fid.rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert fid.rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert fid.rank_correlation([1, 2, 3, 4], [2, 1, 4, 3]) == pytest.approx(0.6)
    assert math.isnan(fid.rank_correlation([1, 2, 3], [5, 5, 5]))
    rows = fid.rank_correlation(np.array([[1, 2, 3, 4], [1, 2, 3, 4]]),
                                np.array([[1, 2, 3, 4], [4, 3, 2, 1]]))
    assert np.allclose(rows, [1.0, -1.0])


def test_halves() -> None:
    assert [(list(a), list(b)) for a, b in fid.halves(2, 64, 0)] == [([0], [1])]
    four = fid.halves(4, 64, 0)
    assert len(four) == 3  # {0,1}, {0,2}, {0,3} against the rest, each once
    for a, b in four:
        assert sorted([*a, *b]) == [0, 1, 2, 3] and len(a) == len(b) == 2 and 0 in a
    many = fid.halves(16, 10, seed=3)
    assert len(many) == 10 and all(len(a) == len(b) == 8 for a, b in many)
    assert [list(a) for a, _ in many] == [list(a) for a, _ in fid.halves(16, 10, seed=3)]
    assert [list(a) for a, _ in many] != [list(a) for a, _ in fid.halves(16, 10, seed=4)]
    with pytest.raises(ValueError, match="even"):
        fid.halves(3, 64, 0)


def test_split_half_reliability() -> None:
    # two runs whose rankings correlate 0.6 -> Spearman-Brown 2*0.6/1.6 = 0.75
    scores = np.array([[1.0, 2.0], [2.0, 1.0], [3.0, 4.0], [4.0, 3.0]])
    assert fid.split_half_reliability(scores, fid.halves(2, 64, 0)) == pytest.approx(0.75)
    same = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    assert fid.split_half_reliability(same, fid.halves(2, 64, 0)) == pytest.approx(1.0)
    reversed_ = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    assert math.isnan(fid.split_half_reliability(reversed_, fid.halves(2, 64, 0)))
    # four runs: halves {0,1}/{2,3} agree, {0,2}/{1,3} and {0,3}/{1,2} as built here
    four = np.array([[1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3.0]])
    assert fid.split_half_reliability(four, fid.halves(4, 64, 0)) == pytest.approx(1.0)


def test_corrected_rho() -> None:
    assert fid.corrected_rho(0.6, 0.8, 0.5) == pytest.approx(0.6 / math.sqrt(0.4))
    assert fid.corrected_rho(0.9, 0.9, 0.9) == pytest.approx(1.0)
    assert math.isnan(fid.corrected_rho(0.5, 0.0, 0.9))
    assert math.isnan(fid.corrected_rho(0.5, 0.9, math.nan))


def test_pick_gap() -> None:
    local = np.array([0.0, 10.0, 5.0])
    assert fid.pick_gap(np.array([1.0, 3.0, 2.0]), local) == 0.0  # picks the local best
    assert fid.pick_gap(np.array([3.0, 2.0, 1.0]), local) == pytest.approx(1.0)  # the worst
    assert fid.pick_gap(np.array([1.0, 2.0, 3.0]), local) == pytest.approx(0.5)
    assert fid.pick_gap(np.array([1.0, 3.0, 2.0]),
                        np.array([0.0, 9.5, 10.0])) == pytest.approx(0.05)
    # a tie for the simulator's best counts against it
    assert fid.pick_gap(np.array([3.0, 3.0, 1.0]), local) == pytest.approx(1.0)
    assert fid.pick_gap(np.array([1.0, 2.0, 3.0]), np.array([4.0, 4.0, 4.0])) == 0.0


def test_brier_score() -> None:
    assert fid.brier_score([0.5, 1.0], [[True, False], [True, True]]) == pytest.approx(0.125)
    assert fid.brier_score([0.0, 1.0], [[True], [False]]) == pytest.approx(1.0)
    assert fid.brier_score([0.25], [[False, False, False, True]]) == pytest.approx(
        (3 * 0.25 ** 2 + 0.75 ** 2) / 4)
    with pytest.raises(ValueError, match="one forecast per configuration"):
        fid.brier_score([0.5], [[True], [False]])


def test_bootstrap_cis() -> None:
    values = np.random.default_rng(5).normal(10.0, 2.0, size=25)

    def stat(idx: np.ndarray) -> dict[str, float]:
        return {"mean": float(values[idx].mean()), "never": math.nan,
                "const": 2.0, "some": math.nan if 0 in idx else 1.0}

    cis = fid.bootstrap_cis(stat, len(values), 2000, seed=0)
    low, high = cis["mean"]
    # the normal interval of the mean: ±1.96 sd/sqrt(n); the bootstrap's is close to it
    half = 1.96 * values.std() / math.sqrt(len(values))
    assert low == pytest.approx(values.mean() - half, abs=0.25 * half)
    assert high == pytest.approx(values.mean() + half, abs=0.25 * half)
    assert cis["const"] == (2.0, 2.0) and cis["some"] == (1.0, 1.0)
    assert all(math.isnan(x) for x in cis["never"])
    assert fid.bootstrap_cis(stat, len(values), 2000, seed=0) == cis
    assert fid.bootstrap_cis(stat, len(values), 2000, seed=1)["mean"] != cis["mean"]


# ----- hand-made runs: rows and verdicts --------------------------------------------------------

def _figures(score: float, crashes: int = 0, uo: tuple[int, int] = (0, 100),
             failure: float = 1.0, p99: float = 100.0) -> fid.RunFigures:
    return fid.RunFigures(seed=0, score=score, failure_pct=failure, frontend_crashes=crashes,
                          endpoint_failure_pct={"GET /": failure},
                          endpoint_p99_ms={"GET /": p99},
                          causes={"carts": {"UO": uo, "UF": (0, 100), "URX": (0, 100),
                                            "UT": None}})


def _configs(local: list[list[float]], sim: list[list[float]],
             crash_local: list[list[int]] | None = None,
             crash_sim: list[list[int]] | None = None) -> list[fid.ConfigRuns]:
    out = []
    for i, (loc, s) in enumerate(zip(local, sim, strict=True)):
        cl = crash_local[i] if crash_local else [0] * len(loc)
        cs = crash_sim[i] if crash_sim else [0] * len(s)
        out.append(fid.ConfigRuns(0, i, None,
                                  [_figures(v, c) for v, c in zip(loc, cl, strict=True)],
                                  [_figures(v, c) for v, c in zip(s, cs, strict=True)]))
    return out


def _row(rows: list[fid.Row], name: str) -> fid.Row:
    return next(r for r in rows if r.name.startswith(name))


def test_rows_a_faithful_simulator_meets_every_target() -> None:
    means = [-1.0, -5.0, -20.0, -50.0, -90.0]
    local = [[m - 0.5, m + 0.5] for m in means]
    sim = [[m - 1, m + 1, m - 0.5, m + 0.5] for m in means]
    rows = fid.load_rows(fid.LoadData(_configs(local, sim), seed=0), seed=0, resamples=200)
    assert [r.name for r in rows if r.target] == list(fid.TARGET_ROWS)
    assert _row(rows, "corrected ρ").value == pytest.approx(1.0)
    assert _row(rows, "pick test").value == 0.0
    assert _row(rows, "crash probability").value == 0.0
    assert all(r.met is not False for r in rows)
    assert _row(rows, "cause UT").met is None  # neither side measured it: not exercised
    assert fid.all_targets_met([rows])
    assert not fid.all_targets_met([rows, None])  # a load without figures misses


def test_rows_a_wrong_simulator_is_named() -> None:
    means = [-1.0, -5.0, -20.0, -50.0, -90.0]
    local = [[m - 0.5, m + 0.5] for m in means]
    sim = [[-m - 100 + d for d in (-1, 1, -0.5, 0.5)] for m in means]  # the ranking reversed
    crash_local = [[0, 0], [0, 0], [1, 1], [1, 1], [1, 1]]
    crash_sim = [[1] * 4, [1] * 4, [0] * 4, [0] * 4, [0] * 4]
    data = fid.LoadData(_configs(local, sim, crash_local, crash_sim), seed=0)
    rows = fid.load_rows(data, seed=0, resamples=200)
    rho = _row(rows, "corrected ρ")
    assert rho.met is False and rho.note.startswith("simulator") and rho.value < 0
    pick = _row(rows, "pick test")
    assert pick.met is False and pick.value == pytest.approx(1.0)
    assert "config 4 (sim" in pick.note and "local best, config 0" in pick.note
    brier = _row(rows, "crash probability")
    assert brier.met is False and brier.value == pytest.approx(1.0)
    assert brier.note.startswith("simulator")
    assert not fid.all_targets_met([rows])


def test_rows_blame_the_local_side_when_its_repeats_disagree() -> None:
    # local repeats rank the configurations in opposite orders: reliability < 0
    local = [[-1.0, -90.0], [-5.0, -50.0], [-20.0, -20.0], [-50.0, -5.0], [-90.0, -1.0]]
    sim = [[-1.0] * 2, [-5.0] * 2, [-20.0] * 2, [-50.0] * 2, [-90.0] * 2]
    crash_local = [[0, 1]] * 5  # a coin flip in every configuration
    rows = fid.load_rows(fid.LoadData(_configs(local, sim, crash_local), seed=0), seed=0,
                         resamples=200)
    rho = _row(rows, "corrected ρ")
    assert rho.met is False and rho.note.startswith("local")
    brier = _row(rows, "crash probability")
    assert brier.met is False and brier.value == pytest.approx(0.5)
    assert brier.note.startswith("local") and "floor of any forecast) 0.250" in brier.note


def test_cause_cells_and_their_error() -> None:
    runs = fid.ConfigRuns(0, 0, None, [_figures(-1, uo=(10, 100)), _figures(-1, uo=(30, 100))],
                          [_figures(-1, uo=(5, 50)), _figures(-1, uo=(5, 50))])
    cells = fid.cause_cells(runs)
    assert [(c.destination, c.cause) for c in cells] == [("carts", "UO")]  # only UO was seen
    assert cells[0].local_pct == pytest.approx(20.0) and cells[0].sim_pct == pytest.approx(10.0)
    data = fid.LoadData([runs, *_configs([[-2.0, -2.0], [-3.0, -3.0]],
                                         [[-2.0, -2.0], [-3.0, -3.0]])], seed=0)
    rows = fid.load_rows(data, seed=0, resamples=100)
    uo = _row(rows, "cause UO")
    assert uo.value == pytest.approx(10.0) and uo.met is False
    assert uo.note.startswith("simulator: it counts fewer UO") and "carts in config 0" in uo.note


def test_load_data_needs_three_aligned_configurations() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        fid.LoadData(_configs([[-1.0, -1.0]] * 2, [[-1.0, -1.0]] * 2), seed=0)
    ragged = _configs([[-1.0, -1.0]] * 3, [[-1.0, -1.0]] * 3)
    ragged[1].local.pop()
    with pytest.raises(ValueError, match="same number of runs"):
        fid.LoadData(ragged, seed=0)


# ----- the comparison loop and the section ------------------------------------------------------

def test_run_comparison_against_an_identical_stand_in_is_exact() -> None:
    # The simulator on the same platform stands in for the local mesh: the same seeds give the
    # same reports, so each side's runs are the other's and every error is 0.
    platform = fid.profile.platform_named("loopback")
    loads = [fid.open_load(60.0, 2.0), fid.open_load(120.0, 2.0)]
    run = fid.run_comparison(SimMesh(platform=platform), fid.configurations(5, 0), loads,
                             repeats=2, sim_seeds=2, seed=0, platform=platform)
    assert run.failures == [] and len(run.runs) == 10
    for r in run.runs:
        assert [f.score for f in r.local] == [f.score for f in r.sim]
        assert r.local == r.sim
    tables = fid.load_tables(run, seed=0, resamples=100)
    for rows in tables:
        assert rows is not None
        assert _row(rows, "pick test").value == 0.0
        assert _row(rows, "failure-rate error").value == 0.0
        assert _row(rows, "p99 ratio").value == pytest.approx(1.0)
        for cause in ("UO", "UF", "URX"):
            assert _row(rows, f"cause {cause}").met is not False
    section = fid.markdown(run, tables, "### Run of now (`cmd`)", seed=0, resamples=100)
    for load in loads:
        assert f"**{load.label}** — 5 configurations × 2 local runs" in section
    for name in fid.TARGET_ROWS:
        assert section.count(f"| {name} |") == 2


_spec = importlib.util.spec_from_file_location(
    "fidelity_script", Path(__file__).resolve().parents[3] / "experiments" / "fidelity.py")
assert _spec is not None and _spec.loader is not None
script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(script)


@pytest.mark.parametrize(("flags", "message"), [
    (("--configs", "2"), "at least 3"),
    (("--repeats", "3"), "must be even"),
    (("--sim-seeds", "5"), "must be even"),
    (("--repeats", "8", "--sim-seeds", "4"), "--repeats <= --sim-seeds"),
    (("--classic", "--rates", "60"), "--classic takes --loads"),
    (("--classic", "--step-s", "5"), "--classic takes --loads"),
    (("--loads", "5:600"), "--loads is the closed load's"),
    (("--rates", "-1"), "must be positive"),
    (("--loads", "ten"), "USERS:REQUESTS"),
    (("--resamples", "10"), "at least 100"),
])
def test_bad_flags(flags: tuple[str, ...], message: str,
                   capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        script.main([*flags, "--replica", "29"])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_defaults_and_quick() -> None:
    full = script._args([])
    assert (full.configs, full.rates, full.step_s, full.repeats, full.sim_seeds) == (
        12, [60.0, 120.0], 10.0, 2, 16)
    quick = script._args(["--quick", "--configs", "5"])
    assert (quick.configs, quick.step_s, quick.sim_seeds) == (5, 3.0, 4)  # a flag given wins
    assert "--quick" in script._command(quick) and "--configs 5" in script._command(quick)
    classic = script._args(["--classic"])
    assert classic.loads == [(5, 600), (10, 1000)]
    assert "--classic --loads 5:600 10:1000" in script._command(classic)


def test_a_bad_flag_is_one_line_from_the_command_line() -> None:
    proc = run_script("fidelity", "--repeats", "3", timeout_s=120)
    assert proc.returncode == 2 and "must be even" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize(("target", "value", "ci", "undecided"), [
    ("≥ 0.95", 0.5, (0.1, 0.97), True),
    ("≥ 0.95", 0.5, (0.1, 0.9), False),
    ("≤ 0.1", 0.2, (0.05, 0.3), True),
    ("≤ 0.1", 0.2, (0.15, 0.3), False),
    ("≤ 10% of the local range", 0.3, (0.08, 0.5), True),
    ("≤ 10% of the local range", 0.3, (0.2, 0.5), False),
    ("0.7–1.3", 0.5, (0.4, 0.75), True),
    ("0.7–1.3", 0.5, (0.4, 0.6), False),
])
def test_a_miss_whose_ci_reaches_the_target_is_not_decided(
        target: str, value: float, ci: tuple[float, float], undecided: bool) -> None:
    row = fid._undecided(fid.Row("x", target, value, ci, False, "simulator: off"))
    assert row.note.startswith("simulator: off")
    assert ("not decided" in row.note) is undecided
    kept = fid.Row("x", target, value, ci, True)
    assert fid._undecided(kept) == kept


def test_classic_load_and_score() -> None:
    platform = fid.profile.platform_named("loopback")
    load = fid.closed_load(3, 120)
    run = fid.run_comparison(SimMesh(platform=platform), fid.configurations(3, 0), [load],
                             repeats=2, sim_seeds=2, seed=0, platform=platform,
                             score=fid.SCORE_FNS["classic"])
    mesh = SimMesh(platform=platform)
    report = mesh.run_load(load.spec, fid.run_seed(0, 0, 0, 0))
    assert run.runs[0].sim[0].score == pytest.approx(
        fid.classic_evaluation_score(report))
    assert run.runs[0].sim[0].score != pytest.approx(fid.evaluation_score(report))


def test_an_unwritable_benchmarks_file_is_one_line_after_the_section(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import envs.backends.local

    class SimAsLocal(SimMesh):
        """The simulator standing in for the local mesh the script starts."""

        envoy_workers = 2

        def __init__(self, replica: int, seed: int) -> None:
            super().__init__(platform=fid.profile.platform_named("loopback"))
            self.state = SimpleNamespace(run_dir=tmp_path / "run")

    monkeypatch.setattr(envs.backends.local, "LocalMesh", SimAsLocal)
    bench, out = unwritable_path(tmp_path), tmp_path / "fidelity.json"
    code = script.main(["--configs", "3", "--rates", "30", "--step-s", "1", "--sim-seeds", "2",
                        "--resamples", "100", "--benchmarks", str(bench), "--json", str(out)])
    assert code == 2
    captured = capsys.readouterr()
    assert "### Run of " in captured.out and "| figure | target |" in captured.out
    assert_one_line_append_error(captured.err, "fidelity", bench)
    assert len(json.loads(out.read_text())["runs"]) == 3  # the --json file is written anyway


def test_an_unwritable_json_file_is_one_line_before_anything_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import envs.backends.local

    def no_mesh(*args: object, **kwargs: object) -> None:
        pytest.fail("the local mesh was started")

    monkeypatch.setattr(envs.backends.local, "LocalMesh", no_mesh)
    out = unwritable_path(tmp_path, "fidelity.json")
    assert script.main(["--quick", "--replica", "29", "--json", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"fidelity: error: --json {out}: cannot write there (Not a directory)\n"
