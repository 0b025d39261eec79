"""rl/evaluation/transfer.py: one greedy episode per backend, the table, the BENCHMARKS append.

The simulator path runs for real (MeshEnv on ``sim`` with a tiny fixed policy); the local
path is replaced by a second simulator episode here (the real local mesh is covered by
``test_local_e2e.py``), so what is tested is the transfer's own logic: the episode record, the
comparison of the two runs, the markdown and the append, and the user errors (the command
line's own checks: ``tests/experiments/test_transfer.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from ray.rllib.core.columns import Columns

import rl.evaluation.transfer as tr
from rl.evaluation.checkpoint import CheckpointError
from tests._unwritable import assert_one_line_append_error, unwritable_path

ENV_CONFIG = {"backend": "sim", "load": "classic", "objective": "classic", "users_range": (2, 3),
              "requests_per_user": 20,
              "episode_len": 3}


class FixedPolicy(torch.nn.Module):
    """An RLModule stand-in whose greedy action is always ``action``."""

    def __init__(self, action: int, n_actions: int) -> None:
        super().__init__()
        self.action, self.n_actions = action, n_actions

    def forward_inference(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        logits = torch.zeros((batch[Columns.OBS].shape[0], self.n_actions))
        logits[:, self.action] = 1.0
        return {Columns.ACTION_DIST_INPUTS: logits}


def _n_actions() -> int:
    from envs.mesh_env import MeshEnv

    env = MeshEnv(ENV_CONFIG)
    try:
        return int(env.action_space.n)
    finally:
        env.close()


def test_run_backend_records_one_greedy_sim_episode() -> None:
    n = _n_actions()
    run = tr.run_backend(ENV_CONFIG, FixedPolicy(1, n), seed=5)
    assert run.backend == "sim"
    assert run.actions == [1, 1, 1]  # greedy: the fixed argmax, episode_len steps
    assert 2 <= run.users <= 3 and run.requests == 20 * run.users
    assert run.healthy_end and run.final_eval_score is not None
    assert run.initial_eval_score < 0 and run.final_eval_score < 0
    assert 0.0 <= run.initial_failure_pct <= 100.0 and run.initial_p99_ms > 0
    again = tr.run_backend(ENV_CONFIG, FixedPolicy(1, n), seed=5)
    assert (again.initial_config, again.final_eval_score) == (run.initial_config,
                                                              run.final_eval_score)
    other = tr.run_backend(ENV_CONFIG, FixedPolicy(0, n), seed=5)
    assert other.actions == [0, 0, 0]
    assert other.initial_eval_score == run.initial_eval_score  # same reset, other actions


def test_run_backend_re_measures_both_configurations_when_asked() -> None:
    n = _n_actions()
    single = tr.run_backend(ENV_CONFIG, FixedPolicy(1, n), seed=5)
    measured = tr.run_backend(ENV_CONFIG, FixedPolicy(1, n), seed=5, measure_runs=2)
    assert measured.actions == single.actions and measured.initial_config == single.initial_config
    assert measured.initial_eval_score != single.initial_eval_score  # means of fresh runs
    again = tr.run_backend(ENV_CONFIG, FixedPolicy(1, n), seed=5, measure_runs=2)
    assert (again.initial_eval_score, again.final_eval_score) == (
        measured.initial_eval_score, measured.final_eval_score)


_REAL_RUN_BACKEND = tr.run_backend
_REAL_TRANSFER_CASES = tr.transfer_cases


def _sim_run(config: dict[str, Any], module: Any, seed: int, measure_runs: int = 0) -> Any:
    """``run_backend`` with the simulator standing in for any backend (same record)."""
    result = _REAL_RUN_BACKEND({**config, "backend": "sim", "replica": None}, module, seed,
                               measure_runs)
    return tr.BackendRun(**{**result.__dict__, "backend": config["backend"]})


def _fake_policy(tmp_path: Path, n: int) -> SimpleNamespace:
    return SimpleNamespace(module=FixedPolicy(2, n), env_config=dict(ENV_CONFIG),
                           env_steps_trained=123, path=tmp_path / "ckpt")


def test_run_compares_both_episodes_and_appends_once(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    n = _n_actions()
    monkeypatch.setattr(tr, "load_policy", lambda path: _fake_policy(tmp_path, n))
    seen: list[str] = []

    def sim_for_both(config: dict[str, Any], module: Any, seed: int, measure_runs: int) -> Any:
        seen.append(config["backend"])
        assert config["episode_len"] == 2  # --episode-len overrides the checkpoint's
        assert measure_runs == 3  # the default
        return _sim_run(config, module, seed, measure_runs)

    monkeypatch.setattr(tr, "run_backend", sim_for_both)
    monkeypatch.setattr(tr, "listening_ports", lambda replica: [])
    bench = tmp_path / "BENCHMARKS.md"
    bench.write_text("# Benchmarks\n")
    cases_seen: list[tuple] = []

    def sim_cases(env_config: dict[str, Any], module: Any, seeds: list[int], runs: int,
                  other: dict[str, Any]) -> list:
        cases_seen.append((tuple(seeds), runs, other["backend"], other["replica"]))
        return _REAL_TRANSFER_CASES(env_config, module, seeds, runs,
                                    {**other, "backend": "sim", "replica": None})

    monkeypatch.setattr(tr, "transfer_cases", sim_cases)
    settings = tr.TransferSettings(checkpoint=tmp_path / "ckpt", episode_len=2, replica=7,
                                   cases=2, benchmarks=bench)
    for _ in range(2):
        tr.run_transfer(settings, "python experiments/transfer.py --cases 2")
    assert seen == ["sim", "local", "sim", "local"]
    assert cases_seen == [((1_000_010, 1_000_011), 3, "local", 7)] * 2
    text = bench.read_text()
    assert text.count("## Transfer") == 1 and text.count("### ") == 2
    assert "123 env steps" in text and "replica 7" in text
    # both "backends" ran the same deterministic episode: everything matches
    assert "same load on both: yes" in text
    assert "Initial configuration identical on both backends: yes" in text
    assert "Same action sequence: yes" in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| sim ") or ln.startswith("| local ")]
    assert len(rows) == 4
    assert rows[0].split("|")[2:5] == rows[1].split("|")[2:5]  # same scores and improvement
    assert text.count("| 1000010 |") == 2 and "same sign in 2 of 2" in text


def test_still_listening_ports_are_an_error(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    n = _n_actions()
    monkeypatch.setattr(tr, "load_policy", lambda path: _fake_policy(tmp_path, n))
    monkeypatch.setattr(tr, "run_backend", _sim_run)
    monkeypatch.setattr(tr, "listening_ports", lambda replica: [22000])
    settings = tr.TransferSettings(checkpoint=tmp_path / "ckpt", episode_len=1, cases=0,
                                   no_append=True, benchmarks=tmp_path / "BENCHMARKS.md")
    with pytest.raises(tr.TransferError, match="still listens on"):
        tr.run_transfer(settings, "cmd")


def test_an_unwritable_benchmarks_file_is_one_line_after_the_section(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    n = _n_actions()
    monkeypatch.setattr(tr, "load_policy", lambda path: _fake_policy(tmp_path, n))
    monkeypatch.setattr(tr, "run_backend", _sim_run)
    monkeypatch.setattr(tr, "listening_ports", lambda replica: [])
    settings = tr.TransferSettings(checkpoint=tmp_path / "ckpt", episode_len=1, cases=0,
                                   benchmarks=unwritable_path(tmp_path))
    with pytest.raises(tr.NotAppendedError):  # experiments/transfer.py: exit status 2
        tr.run_transfer(settings, "cmd")
    captured = capsys.readouterr()
    assert "| sim " in captured.out and "| local " in captured.out
    assert_one_line_append_error(captured.err, "transfer", settings.benchmarks)


def test_user_errors(tmp_path: Path) -> None:
    missing = tmp_path / "results.json"
    settings = tr.TransferSettings(sweep_results=missing, no_append=True,
                                   benchmarks=tmp_path / "BENCHMARKS.md")
    with pytest.raises(CheckpointError, match="does not exist"):
        tr.run_transfer(settings, "cmd")
    missing.write_text(json.dumps({"best": {}}))
    with pytest.raises(CheckpointError, match="no best trial checkpoint"):
        tr.run_transfer(settings, "cmd")


def test_action_summary_and_table() -> None:
    assert tr.action_summary([], str) == "no actions"
    assert tr.action_summary([3, 3, 1], lambda a: f"a{a}") == (
        "2 distinct in 3 steps; most frequent `a3` (67 %)")
    run = tr.BackendRun(backend="local", users=2, requests=40, initial_config={},
                        initial_eval_score=-300.0, final_eval_score=None,
                        initial_failure_pct=1.0, final_failure_pct=None, initial_p99_ms=120.0,
                        final_p99_ms=None, actions=[0], healthy_end=False, wall_s=3.0)
    row = tr.table([run], str).splitlines()[-1]
    assert row.startswith("| local (unhealthy end) | -300 | — | — |")


def test_transfer_cases_measure_both_configurations_on_the_other_backend() -> None:
    n = _n_actions()
    cases = tr.transfer_cases(ENV_CONFIG, FixedPolicy(1, n), [5, 6], 2,
                              {**ENV_CONFIG, "backend": "sim", "replica": None})
    assert [c.seed for c in cases] == [5, 6] and all(c.distinct_actions == 1 for c in cases)
    for c in cases:
        # The simulator standing in for the other backend, same loads: the same numbers.
        assert (c.other_initial, c.other_final) == (c.sim_initial, c.sim_final)
        assert c.other_gain == c.sim_gain == c.sim_final - c.sim_initial
    table = tr.cases_table(cases, "local")
    assert "| 5 |" in table and "same sign in 2 of 2" in table
    broken = tr.CaseTransfer(7, 3, 1, -100.0, -90.0, -120.0, None)
    assert broken.other_gain is None
    assert "1 case(s) unhealthy" in tr.cases_table([*cases, broken], "local")
