"""The simulator's platform (per-hop network and sidecar costs) and the loopback probe's fit."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from envs.backends.base import LoadSpec
from envs.backends.local.platform_probe import (
    count_growth,
    fit_added_lognormal,
    fit_censored_lognormal,
    fit_raw,
    one_request_per_connection,
)
from envs.backends.sim import SimMesh, profile
from envs.istio import ConnectionPool, DestinationRule, HttpSettings, TcpSettings


def _tiny_connect_timeout() -> list[DestinationRule]:
    # every request to catalogue opens a connection that must be up within 1 ms
    return [DestinationRule("catalogue", "catalogue", ConnectionPool(
        tcp=TcpSettings(connect_timeout_ms=1),
        http=HttpSettings(max_requests_per_connection=1)))]


def test_default_platform_is_the_calibrated_cluster() -> None:
    mesh = SimMesh(warm=False)
    assert mesh.platform is profile.CLUSTER
    assert profile.CLUSTER.connect_median_ms == profile.CONNECT_MEDIAN_MS
    assert profile.CLUSTER.sidecar_pass_quantile_ms(0.9) == pytest.approx(
        profile.SIDECAR_PASS_P90_MS)


def test_platform_by_name_and_bad_names() -> None:
    assert SimMesh(platform="loopback", warm=False).platform is profile.LOOPBACK
    with pytest.raises(ValueError, match=r"unknown platform 'moon'.*cluster"):
        SimMesh(platform="moon", warm=False)


@pytest.mark.parametrize("field", ["sidecar_pass_median_ms", "connect_median_ms"])
def test_platform_rejects_non_positive_medians(field: str) -> None:
    kwargs = {**profile.CLUSTER.__dict__, field: 0.0}
    with pytest.raises(ValueError, match=field):
        profile.Platform(**kwargs)


def test_loopback_is_cheaper_per_hop_than_the_cluster() -> None:
    lo, cl = profile.LOOPBACK, profile.CLUSTER
    assert lo.sidecar_pass_median_ms < cl.sidecar_pass_median_ms
    assert lo.connect_median_ms < cl.connect_median_ms
    assert lo.source and "platform_probe" in lo.source


def test_connect_cost_decides_tiny_connect_timeouts() -> None:
    """A 1 ms connectTimeout fails most connects at the cluster's ~2 ms set-up, fewer on
    loopback; the same seed gives the same report on each platform."""
    load = LoadSpec(users=2, requests=200)
    failures = {}
    for name in ("cluster", "loopback"):
        mesh = SimMesh(_tiny_connect_timeout(), platform=name, frontend_crashes=False)
        r1, r2 = mesh.run_load(load, seed=3), mesh.run_load(load, seed=3)
        assert r1 == r2
        failures[name] = r1.extra["connect_failures"].get("catalogue", 0) / max(
            1, r1.extra["connections_opened"]["catalogue"])
    assert failures["cluster"] > 0.5
    assert failures["loopback"] < failures["cluster"] - 0.2


def test_loopback_hops_are_faster() -> None:
    load = LoadSpec(users=1, requests=300)
    p50 = {name: SimMesh(platform=name).run_load(load, seed=1).endpoints["GET /catalogue"].median_ms
           for name in ("cluster", "loopback")}
    assert p50["loopback"] < p50["cluster"]


@pytest.mark.parametrize(("median", "sigma", "terms", "q"), [(0.1, 0.8, 4, 0.9),
                                                              (1.0, 0.6, 1, 0.99)])
def test_fit_added_lognormal_recovers_a_known_lognormal(median: float, sigma: float,
                                                        terms: int, q: float) -> None:
    rng = np.random.default_rng(7)
    base = 0.2 + 0.05 * rng.random(40_000)
    total = base + median * np.exp(sigma * rng.standard_normal((40_000, terms))).sum(axis=1)
    got_median, got_sigma = fit_added_lognormal(base, total, terms=terms, upper_q=q)
    assert got_median == pytest.approx(median, rel=0.1)
    assert got_sigma == pytest.approx(sigma, abs=0.1)


def test_fit_added_lognormal_refuses_nothing_added() -> None:
    with pytest.raises(ValueError, match="not above"):
        fit_added_lognormal([1.0, 1.1, 1.2], [0.9, 1.0, 1.1], terms=1, upper_q=0.9)


def test_probe_rules_reconnect_every_http_service_only() -> None:
    rules = one_request_per_connection()
    names = {r.service for r in rules}
    assert "catalogue" in names and "front-end" in names
    assert not names & {"carts-db", "session-db", "rabbitmq", "user-db"}
    assert all(r.connection_pool.http.max_requests_per_connection == 1 for r in rules)
    assert math.isfinite(profile.LOOPBACK.connect_quantile_ms(0.99))


def test_fit_censored_lognormal_recovers_whole_ms_counts() -> None:
    """Envoy truncates connect times to whole ms; the interval fit still finds the lognormal."""
    rng = np.random.default_rng(11)
    values = 0.55 * np.exp(0.8 * rng.standard_normal(50_000))
    ks, ns = np.unique(np.floor(values).astype(int), return_counts=True)
    median, sigma = fit_censored_lognormal(dict(zip(ks.tolist(), ns.tolist(), strict=True)))
    assert median == pytest.approx(0.55, rel=0.05)
    assert sigma == pytest.approx(0.8, rel=0.05)


def test_fit_censored_lognormal_needs_spread_and_data() -> None:
    with pytest.raises(ValueError, match="at least 50"):
        fit_censored_lognormal({0: 1000})
    with pytest.raises(ValueError, match="at least 50"):
        fit_censored_lognormal({0: 10, 1: 5})


def test_count_growth_is_the_difference_per_ms() -> None:
    assert count_growth({0: 5, 1: 2}, {0: 9, 1: 2, 3: 1}) == {0: 4, 3: 1}



MEASUREMENTS = Path(__file__).resolve().parents[4] / "envs/backends/local/measurements"


def test_loopback_figures_refit_from_the_recorded_samples() -> None:
    """profile.LOOPBACK is what the probe's fit gives on the samples it cites."""
    saved = json.loads((MEASUREMENTS / "loopback_probe_2026-11-27.json").read_text())
    m = fit_raw(saved["samples_ms"], int(saved["rounds"]))
    lo = profile.LOOPBACK
    assert m.sidecar_pass_median_ms == pytest.approx(lo.sidecar_pass_median_ms, abs=5e-4)
    assert m.sidecar_pass_sigma == pytest.approx(lo.sidecar_pass_sigma, abs=5e-3)
    assert m.connect_median_ms == pytest.approx(lo.connect_median_ms, abs=5e-3)
    # the set-up times' sigma; LOOPBACK's connect body is the stall mixture's (issue 13)
    assert m.connect_sigma == pytest.approx(profile._LOOPBACK_CONNECT_SIGMA, abs=5e-3)
    assert m.refused_median_ms == pytest.approx(lo.connect_refused_ms, abs=5e-4)
    assert m.app_connect_median_ms == pytest.approx(lo.inbound_connect_ms, abs=5e-4)


def test_recorded_timeouts_are_flat_where_the_lognormal_falls() -> None:
    """The known gap the README states: ~6 % of connects time out at 1, 2 and 3 ms alike."""
    saved = json.loads((MEASUREMENTS / "loopback_probe_timeouts_2026-11-27.json").read_text())
    m = fit_raw(saved["samples_ms"], int(saved["rounds"]))
    measured = m.timeout_pct_measured
    assert set(measured) == {1, 2, 3}
    assert all(4.0 < pct < 8.0 for pct in measured.values())
    assert m.timeout_pct_of_fit[1] > measured[1] and m.timeout_pct_of_fit[3] < measured[3]


def test_fit_stall_mixture_recovers_a_known_mixture() -> None:
    from envs.backends.local.platform_probe import StallMixture, fit_stall_mixture

    truth = StallMixture(0.5, 0.1, 0.12, 4.0, 0.5)
    rng = np.random.default_rng(3)
    run = {}
    for t in (1, 2, 3, 5, 10):
        n = 200_000
        run[str(t)] = {"connects": n, "timeouts": int(rng.binomial(n, truth.sf(float(t)))),
                       "connect_counts": {}}
    fitted, pooled = fit_stall_mixture([run], 0.5)
    assert pooled["3"][0] == 200_000
    assert fitted.stall_p == pytest.approx(0.12, abs=0.01)
    assert fitted.stall_median_ms == pytest.approx(4.0, rel=0.05)
    for t in (1.0, 2.0, 3.0, 5.0, 10.0):
        assert fitted.sf(t) == pytest.approx(truth.sf(t), abs=0.003)


def test_fit_stall_mixture_needs_four_timeouts() -> None:
    from envs.backends.local.platform_probe import fit_stall_mixture

    run = {str(t): {"connects": 100, "timeouts": 6, "connect_counts": {}} for t in (1, 2, 3)}
    with pytest.raises(ValueError, match="at least 4 finite"):
        fit_stall_mixture([run], 0.5)


def test_loopback_stall_mixture_refits_from_the_recorded_runs() -> None:
    """profile.LOOPBACK's stall component is what --fit-stalls gives on the files it cites."""
    from envs.backends.local.platform_probe import fit_stall_mixture

    files = ("loopback_stalls_2026-12-03_run0.json", "loopback_stalls_2026-12-03_run1.json",
             "loopback_stalls_2026-11-27_converted.json")
    runs = [json.loads((MEASUREMENTS / f).read_text())["stalls"] for f in files]
    m, _ = fit_stall_mixture(runs, profile.LOOPBACK.connect_median_ms)
    lo = profile.LOOPBACK
    assert m.body_sigma == pytest.approx(lo.connect_sigma, abs=5e-3)
    assert m.stall_p == pytest.approx(lo.connect_stall_p, abs=5e-3)
    assert m.stall_median_ms == pytest.approx(lo.connect_stall_median_ms, abs=0.05)
    assert m.stall_sigma == pytest.approx(lo.connect_stall_sigma, abs=5e-3)
