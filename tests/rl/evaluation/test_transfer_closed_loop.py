"""rl/evaluation/transfer_closed_loop.py: the gains, the retained ratio and its undefined case,
the win count against adaptive concurrency, the refusal of local-only methods, evaluate_methods
with a backend per method, and a whole run with the simulator standing in for the local mesh
(the real local mesh: tests/experiments/test_transfer_closed_loop.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import rl.evaluation.transfer_closed_loop as tc
from envs.actions import make_catalogue
from envs.backends import make_backend
from envs.settings import DEFAULT_ENV_CONFIG
from rl.controllers import AdaptiveConcurrencyController, istio_defaults
from rl.evaluation.closed_loop import ScenarioRun, StepRecord
from rl.evaluation.scenario_eval import evaluate_methods
from rl.evaluation.transfer import TransferError
from tests._unwritable import unwritable_path
from tests.rl.evaluation._policies import ObsHash


def _run(name: str, scores: list[float]) -> ScenarioRun:
    """A run whose steps 1..T scored ``scores`` (summed score = their sum)."""
    steps = [StepRecord(t, 60.0, (), True, s, good_pct=100 + s, goodput_rps=60.0,
                        failure_pct=0.0, latency_mean_ms=100.0, latency_p99_ms=300.0)
             for t, s in enumerate([0.0, *scores])]
    return ScenarioRun("case", name, 0, steps=steps)


def _runs(per_backend: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, list]]:
    """``{backend: {method: [summed score per case]}}`` as runs of two steps each."""
    return {b: {m: [_run(m, [v / 2, v / 2]) for v in vs] for m, vs in methods.items()}
            for b, methods in per_backend.items()}


def test_gain_retained_summed_and_per_case() -> None:
    runs = _runs({"sim": {"policy": [-50, -60, -100], "istio_default": [-100, -100, -101]},
                  "local": {"policy": [-70, -90, -100], "istio_default": [-100, -100, -90],
                            "adaptive_concurrency": [-80, -95, -95]}})
    numbers = tc.transfer_numbers(runs, episode_len=2)
    assert numbers["gains"] == {"sim": [50, 40, 1], "local": [30, 10, -10]}
    r = numbers["retained"]
    assert r["ratio"] == pytest.approx(30 / 91)
    # per case: the third sim gain (1) is not above 1 point x 2 steps: no ratio
    assert r["per_case"][:2] == [pytest.approx(0.6), pytest.approx(0.25)]
    assert r["per_case"][2] is None
    low, high = r["ci95"]
    assert low <= r["ratio"] <= high
    vs = numbers["vs_adaptive"]
    assert (vs["wins"], vs["n"]) == (2, 3)  # -70 > -80, -90 > -95, -100 < -95
    md = "\n".join(tc.targets_markdown([(SimpleNamespace(name=f"c{i}"), i) for i in range(3)],
                                       numbers))
    assert "**Gain retained on real Envoy: 0.33**" in md and "MISSED by 0.27" in md
    assert "undefined (sim gain ≤ 2)" in md
    assert "adaptive concurrency on local in 2 of 3 cases" in md and "Target ≥ 2/3: met" in md


def test_no_sim_gain_means_no_ratio() -> None:
    runs = _runs({"sim": {"policy": [-100, -100], "istio_default": [-99, -100]},
                  "local": {"policy": [-50, -50], "istio_default": [-100, -100],
                            "adaptive_concurrency": [-40, -40]}})
    numbers = tc.transfer_numbers(runs, episode_len=2)
    assert numbers["retained"]["ratio"] is None
    assert numbers["retained"]["per_case"] == [None, None]
    md = "\n".join(tc.targets_markdown([(SimpleNamespace(name=f"c{i}"), i) for i in range(2)],
                                       numbers))
    assert "**Gain retained: undefined.**" in md and "not measurable" in md
    assert "Gain retained on real Envoy" not in md
    assert "MISSED: 0 of 2 where 2 were needed" in md


def test_retained_ci_is_seeded_and_needs_two_cases() -> None:
    a = tc.retained_ci([10, 20, 30, 40], [5, 10, 20, 35], threshold=1.0)
    assert a == tc.retained_ci([10, 20, 30, 40], [5, 10, 20, 35], threshold=1.0)
    assert a[0] < 70 / 100 < a[1] and a[2] == 0
    assert all(math.isnan(v) for v in tc.retained_ci([10], [5], 1.0)[:2])
    low, high, left_out = tc.retained_ci([10, -10], [5, 5], threshold=1.0)
    assert left_out > 0 and low == high == pytest.approx(0.5)  # only {10, 10} has a sim gain


def test_local_only_methods_are_refused_elsewhere_with_a_reason() -> None:
    methods = {"istio_default": istio_defaults, "adaptive_concurrency":
               AdaptiveConcurrencyController}
    refused = tc.refusals(methods, SimpleNamespace(name="sim"))
    assert list(refused) == ["adaptive_concurrency"]
    assert "does not model Envoy's adaptive concurrency filter" in refused["adaptive_concurrency"]
    quick = tc.transfer_methods(ObsHash(3), make_catalogue(DEFAULT_ENV_CONFIG["catalogue"]),
                                quick=True)
    assert list(quick) == list(tc.QUICK_METHODS)
    full = tc.transfer_methods(ObsHash(3), make_catalogue(DEFAULT_ENV_CONFIG["catalogue"]))
    assert list(full) == ["policy", "istio_default", "tpe_201", "rule_based",
                          "gateway_throttle", "adaptive_concurrency"]


class _StandIn:
    """The simulator presented as a local replica started for ``controller`` (its name and
    adaptive concurrency filter are what the controllers check)."""

    name = "local"

    def __init__(self, controller: Any, log: list[str]) -> None:
        self.sim = make_backend("sim")
        self.adaptive_concurrency = getattr(controller, "params", None)
        self.replica = 99
        self.log = log
        log.append(f"open {getattr(controller, 'name', type(controller).__name__)}")

    def __getattr__(self, key: str) -> Any:
        return getattr(self.sim, key)

    def close(self) -> None:
        self.log.append("close")
        self.sim.close()


def test_evaluate_methods_interleaved_backends_give_the_shared_simulators_runs() -> None:
    catalogue = make_catalogue(DEFAULT_ENV_CONFIG["catalogue"])
    plan = tc.transfer_plan(2, 3)
    methods = {"policy": lambda: tc.standard_methods(ObsHash(len(catalogue)), catalogue)[
        "policy"](), "istio_default": istio_defaults}
    shared = evaluate_methods(plan, methods, 2.0, 3, catalogue, log=lambda _: None)
    log: list[str] = []
    own = evaluate_methods(plan, methods, 2.0, 3, catalogue, log=lambda _: None,
                           backend_for=lambda c: _StandIn(c, log))
    # case after case, each method on a backend of its own for that case, the order rotated
    # by one method per case (a drifting machine load does not favour one method)
    assert log == ["open policy", "close", "open istio_default", "close",
                   "open istio_default", "close", "open policy", "close"]
    for name in methods:
        assert [r.summed_score for r in own[name]] == [r.summed_score for r in shared[name]]
        assert all(len(r.steps) == 4 for r in own[name])


def test_whole_run_with_the_simulator_standing_in_for_local(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    catalogue = make_catalogue(DEFAULT_ENV_CONFIG["catalogue"])
    policy = SimpleNamespace(module=ObsHash(len(catalogue)), env_config={},
                             env_steps_trained=7, path=tmp_path / "ckpt")
    monkeypatch.setattr(tc, "load_policy", lambda path: policy)
    opened: list[str] = []
    monkeypatch.setattr(tc, "fresh_local_replica", lambda c, replica: _StandIn(c, opened))
    monkeypatch.setattr(tc, "listening_ports", lambda replica: [])
    bench = tmp_path / "BENCHMARKS.md"
    bench.write_text("# Benchmarks\n\n## Transfer\n\nintro\n\n## Main job\n\nkept\n")
    settings = tc.ClosedLoopSettings(benchmarks=bench, output=tmp_path / "out",
                                     checkpoint=tmp_path / "ckpt", cases=2, episode_len=3,
                                     step_s=2.0)
    summary = tc.run_closed_loop(settings, "python experiments/transfer.py --cases 2",
                                 log=lambda _: None)
    # a replica per method and case, adaptive concurrency included
    assert opened.count("close") == 6 * 2
    assert list(summary["refused"]["sim"]) == ["adaptive_concurrency"]
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    for backend, n_methods in (("sim", 5), ("local", 6)):
        cases = doc["backends"][backend]["cases"]
        assert len(cases) == 2 and all(len(c["runs"]) == n_methods for c in cases)
        assert all(len(r["steps"]) == 4 for c in cases for r in c["runs"].values())
    assert (tmp_path / "out" / "traces.png").stat().st_size > 0
    text = bench.read_text()
    section = text[text.index("## Transfer"):text.index("## Main job")]
    assert "`python experiments/transfer.py --cases 2`" in section
    assert "| adaptive_concurrency | n/a (local only) |" in section
    assert "adaptive_concurrency on sim: n/a (local only) — method 'adaptive_concurrency' " \
           "needs backend 'local'" in section
    rows = [ln for ln in section.splitlines() if ln.startswith("| adaptive_concurrency |")]
    assert len(rows) == 2  # local's row, and sim's n/a row
    assert "Summed score per case, sim / local:" in section
    # run 0 plays Istio's defaults for these on both "backends": equal scores (same seeds)
    check = summary["reset_check"]
    assert set(check["local"]) == {"policy", "istio_default", "rule_based",
                                   "adaptive_concurrency"}
    assert check["local"]["policy"] == check["local"]["istio_default"] == check["sim"]["policy"]
    assert "| sim | " in section and "Reset-run check" in section
    assert text.endswith("## Main job\n\nkept\n")


def test_bad_settings_are_one_line_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    settings = tc.ClosedLoopSettings(benchmarks=tmp_path / "B.md", output=blocker / "out",
                                     checkpoint=tmp_path / "ckpt")
    with pytest.raises(TransferError, match="cannot create output directory"):
        tc.run_closed_loop(settings, "cmd")
    with pytest.raises(TransferError, match="--cases and --episode-len must be >= 1"):
        tc.run_closed_loop(tc.ClosedLoopSettings(benchmarks=tmp_path / "B.md", cases=0), "cmd")


def test_an_unwritable_benchmarks_file_is_refused_before_anything_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A BENCHMARKS.md under a regular file (which ``os.access`` on its "parent" passed) is one
    line before the checkpoint is even loaded; with ``no_append`` it is not looked at."""
    monkeypatch.setattr(tc, "load_policy", lambda path: pytest.fail("loaded"))
    bench = unwritable_path(tmp_path)
    settings = tc.ClosedLoopSettings(benchmarks=bench, output=tmp_path / "out",
                                     checkpoint=tmp_path / "ckpt")
    with pytest.raises(TransferError) as exc:
        tc.run_closed_loop(settings, "cmd")
    assert str(exc.value) == f"benchmarks file {bench} is not writable: Not a directory"
    assert list((tmp_path / "out").iterdir()) == []  # the output's probe is gone
    settings = tc.ClosedLoopSettings(benchmarks=bench, output=tmp_path / "out",
                                     checkpoint=tmp_path / "ckpt", no_append=True)
    with pytest.raises(pytest.fail.Exception, match="loaded"):
        tc.run_closed_loop(settings, "cmd")


def test_a_replica_already_up_is_refused_before_anything_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tc, "load_policy", lambda path: SimpleNamespace(
        module=ObsHash(3), env_config={}, env_steps_trained=1, path=path))
    monkeypatch.setattr(tc, "listening_ports", lambda replica: [25400, 25401])
    monkeypatch.setattr(tc, "evaluate_methods", lambda *a, **k: pytest.fail("ran"))
    settings = tc.ClosedLoopSettings(benchmarks=tmp_path / "B.md", output=tmp_path / "out",
                                     checkpoint=tmp_path / "ckpt", replica=22)
    with pytest.raises(TransferError, match=r"replica 22 is up \(2 of its ports listen, from "
                                            r"25400\): pick another --replica"):
        tc.run_closed_loop(settings, "cmd")


def test_recorded_paths_are_relative_to_the_repository(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """BENCHMARKS.md names files under the working directory relative to it (no machine's
    directory in the record) and leaves paths elsewhere as given."""
    monkeypatch.chdir(tmp_path)
    inside = tmp_path / "results" / "transfer" / "traces.png"
    assert tc.shown_path(inside) == "results/transfer/traces.png"
    assert tc.shown_path("results/pg_sweep/results.json") == "results/pg_sweep/results.json"
    outside = tmp_path.parent / "elsewhere" / "ckpt"
    assert tc.shown_path(outside) == str(outside)
