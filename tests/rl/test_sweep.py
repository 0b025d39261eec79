"""The sweep's library (rl/sweep.py): settings, the backend check, resuming."""

from __future__ import annotations

from pathlib import Path

import pytest

import envs.backends.registry
from rl.sweep import SweepError, check_backend, check_experiment_dir, sweep_settings


def test_smoke_is_smaller_than_the_default() -> None:
    full = sweep_settings()
    smoke = sweep_settings(smoke=True)
    assert (full.backend, full.num_env_runners, full.address, full.resume) == ("sim", 2, None,
                                                                              False)
    assert len(smoke.learning_rates) < len(full.learning_rates)
    assert smoke.iterations < full.iterations
    assert smoke.eval_episodes < full.eval_episodes
    assert full.output == (Path.cwd() / "results" / "pg_sweep").resolve()


def test_explicit_flags_override_smoke() -> None:
    s = sweep_settings(smoke=True, samples=5, iterations=7, num_env_runners=2)
    assert (s.samples, s.iterations, s.num_env_runners) == (5, 7, 2)


@pytest.mark.parametrize(("flags", "message"), [
    ({"samples": 0}, "--samples"),
    ({"num_env_runners": 3, "episodes_per_batch": 2}, "--episodes-per-batch"),
    ({"episode_len": 0}, "--episode-len"),
])
def test_bad_numbers_are_named(flags: dict[str, int], message: str) -> None:
    with pytest.raises(SweepError, match=message):
        sweep_settings(**flags)


def test_resume_without_a_stored_sweep_is_a_clear_error(tmp_path: Path) -> None:
    settings = sweep_settings(smoke=True, resume=True, output=tmp_path)
    with pytest.raises(SweepError, match="no sweep to resume"):
        check_experiment_dir(settings)


def test_backend_check_is_the_registrys(monkeypatch: pytest.MonkeyPatch) -> None:
    check_backend("sim")
    monkeypatch.delitem(envs.backends.registry.BACKENDS, "local")
    with pytest.raises(SweepError, match="unknown backend 'local'; known: k8s, sim"):
        check_backend("local")
    monkeypatch.setitem(envs.backends.registry.BACKENDS, "k8s", "envs.backends.no_such:K8sMesh")
    with pytest.raises(SweepError, match=r"backend 'k8s' cannot be loaded: .*no_such"):
        check_backend("k8s")
