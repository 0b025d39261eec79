"""The non-RL tuners of rl/baselines.py: the search space, random search, TPE, local search, and
faults injected through the load (LoadSpec.faults)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from envs.actions import CLASSIC_KNOBS, TUNABLE_SERVICES, classic_initial_config
from envs.backends.base import LoadSpec, ServiceDown
from envs.backends.sim import SimMesh
from envs.knobs import Knob, knob_value
from envs.measure import FAILED_RUN_SCORE
from rl.baselines import (
    LoadTester,
    SearchTrace,
    local_search,
    random_search,
    reachable_space,
    tpe_search,
)

LOAD = LoadSpec(users=12, requests=960)


@pytest.fixture(scope="module")
def tester() -> LoadTester:
    return LoadTester(SimMesh(), LOAD)


def _bad_start() -> dict:
    """Every tunable service throttled to one connection, one pending request, 1 ms connect."""
    space = reachable_space()
    return space.config(dict.fromkeys(space.names, 1))


def test_reachable_space_is_what_an_episode_can_reach() -> None:
    space = reachable_space("classic", init_upper=100, episode_len=20)
    assert space.services == TUNABLE_SERVICES
    assert space.knobs == CLASSIC_KNOBS
    assert space.dim == 12 * 6
    # 100 + 20 × the catalogue's largest raise of each knob
    assert space.high == {Knob.MAX_CONNECTIONS: 500, Knob.CONNECT_TIMEOUT_MS: 4100,
                          Knob.HTTP1_MAX_PENDING_REQUESTS: 900, Knob.HTTP2_MAX_REQUESTS: 4100,
                          Knob.MAX_REQUESTS_PER_CONNECTION: 900, Knob.MAX_RETRIES: 900}
    assert reachable_space(episode_len=5).high[Knob.MAX_CONNECTIONS] == 200
    with pytest.raises(ValueError, match="episode_len"):
        reachable_space(episode_len=0)


def test_config_point_round_trip_and_clipping() -> None:
    space = reachable_space()
    initial = classic_initial_config(np.random.default_rng(3))
    point = space.point_of(initial)
    assert space.config(point) == initial  # the notebook's draw lies inside the box
    wild = dict.fromkeys(space.names, 1e9)
    config = space.config(wild)
    assert knob_value(config["carts"], Knob.MAX_CONNECTIONS) == 500
    assert knob_value(config["carts"], Knob.CONNECT_TIMEOUT_MS) == 4100
    assert knob_value(space.config(dict.fromkeys(space.names, -5))["user"],
                      Knob.MAX_RETRIES) == 1
    with pytest.raises(ValueError, match="missing"):
        space.config({})


def test_sample_is_log_uniform_within_range() -> None:
    space = reachable_space()
    rng = np.random.default_rng(0)
    values = np.array([list(space.sample(rng).values()) for _ in range(300)])
    assert values.min() >= 1
    timeouts = values[:, [i for i, n in enumerate(space.names)
                          if n.endswith("tcp.connectTimeout")]]
    assert timeouts.max() <= 4100
    # log-uniform: about half the draws below sqrt(4100) ≈ 64
    assert 0.35 < (timeouts < 64).mean() < 0.65


def test_random_search_improves_on_a_bad_start(tester: LoadTester) -> None:
    space = reachable_space()
    start = _bad_start()
    trace = random_search(lambda c, k: tester.measure(c, 500 + k).objective, space, 40, seed=1,
                          start=start)
    assert trace.configs[0] == start and len(trace.scores) == 40
    best = trace.configs[trace.incumbent(40)]
    assert best != start
    # better on load seeds the search never saw, by a wide margin (the SLO evaluation score
    # spans -100..0: the throttled start serves ~8 % of requests within SLO)
    fresh = range(9000, 9004)
    start_score = np.mean([tester.measure(start, s).objective for s in fresh])
    best_score = np.mean([tester.measure(best, s).objective for s in fresh])
    assert best_score > start_score + 50, (start_score, best_score)


def test_tpe_is_seeded_and_reproducible(tester: LoadTester) -> None:
    space = reachable_space()
    start = _bad_start()

    def objective(config: dict, k: int) -> float:
        return tester.measure(config, 700 + k).objective

    a = tpe_search(objective, space, 14, seed=5, start=start, n_startup_trials=5)
    b = tpe_search(objective, space, 14, seed=5, start=start, n_startup_trials=5)
    c = tpe_search(objective, space, 14, seed=6, start=start, n_startup_trials=5)
    assert a.scores == b.scores and a.configs == b.configs
    assert a.configs[1:] != c.configs[1:]
    assert a.configs[0] == start  # the live configuration is measured first
    assert max(a.scores) > a.scores[0]


def test_local_search_never_loses_its_parent(tester: LoadTester) -> None:
    space = reachable_space()
    start = _bad_start()
    trace = local_search(lambda c, k: tester.measure(c, 800 + k).objective, space, 30, seed=0,
                         start=start)
    assert trace.configs[0] == start
    assert max(trace.scores) > trace.scores[0]
    # each candidate differs from the start in a few knobs only at first
    changed = sum(trace.configs[1][s] != start[s] for s in start)
    assert 1 <= changed <= 12


def test_search_trace_incumbent_and_budget_errors() -> None:
    trace = SearchTrace("t")
    for i, score in enumerate([-5.0, -3.0, -3.0, -9.0]):
        trace.record({"carts": None} if i else {}, score)  # type: ignore[dict-item]
    assert trace.incumbent(1) == 0
    assert trace.incumbent(4) == 1  # first of the ties
    assert list(trace.best_so_far()) == [-5.0, -3.0, -3.0, -3.0]
    with pytest.raises(ValueError, match="n_evals"):
        trace.incumbent(5)
    with pytest.raises(ValueError, match="n_evals"):
        random_search(lambda c, k: 0.0, reachable_space(), 0, seed=0)


def test_measure_is_deterministic_and_honest(tester: LoadTester) -> None:
    a = tester.measure({}, 42)
    b = tester.measure({}, 42)
    assert a == b and a.healthy and a.error == ""
    assert a.eval_score is not None and a.eval_score < 0 and a.objective == a.eval_score
    assert 0.0 <= a.failure_pct < 100.0 and a.p99_ms > 0
    assert FAILED_RUN_SCORE == -1800.0


def test_sim_faults_inject_into_every_run() -> None:
    down = (ServiceDown("carts", 2.0, 6.0),)
    plain = LoadTester(SimMesh(), LOAD).measure({}, 3)
    faulty_mesh = SimMesh()
    faulty = LoadTester(faulty_mesh, replace(LOAD, faults=down)).measure({}, 3)
    assert faulty.failure_pct > plain.failure_pct + 3.0
    assert faulty_mesh.healthy()  # the health check runs without the fault
    # the same through MeshEnv, by env_config["faults"]: in the LoadSpec of every run
    from envs.mesh_env import MeshEnv

    env = MeshEnv({"backend": "sim", "faults": list(down),
                   "users_range": (12, 12), "init": "istio_default"})
    try:
        _, info = env.reset(seed=0)
        assert env.load_spec.faults == down
        env_plain = MeshEnv({"users_range": (12, 12), "init": "istio_default"})
        try:
            _, info_plain = env_plain.reset(seed=0)
        finally:
            env_plain.close()
    finally:
        env.close()
    assert info["failure_pct"] > info_plain["failure_pct"] + 3.0


def test_rule_tuning_is_seeded_and_keeps_the_best_of_its_finalists() -> None:
    from envs.backends import make_backend
    from rl.baselines import tune_rule_params
    from rl.controllers import RuleParams

    backend = make_backend("sim")
    try:
        a = tune_rule_params(backend, 3, 1, seed=4, top_k=2, n_selection=1, episode_len=8)
        b = tune_rule_params(backend, 3, 1, seed=4, top_k=2, n_selection=1, episode_len=8)
    finally:
        backend.close()
    assert a.candidates[0] == RuleParams() and len(a.candidates) == 3
    assert a.scores == b.scores and a.best == b.best
    assert a.episodes == 3 + 2
    best = a.finalists[int(max(range(2), key=lambda i: a.selection_scores[i]))]
    assert a.best == a.candidates[best]
