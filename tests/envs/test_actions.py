"""Tests of envs.actions: the numbered action catalogues and the notebook's initial
configuration."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from envs import actions
from envs.actions import (
    CLASSIC_KNOBS,
    CLASSIC_SERVICES,
    TUNABLE_SERVICES,
    Action,
    ActionKind,
    classic_initial_config,
    istio_default_config,
    make_catalogue,
    render_action_table,
)
from envs.istio import (
    INT32_MAX,
    ConnectionPool,
    H2UpgradePolicy,
    HttpSettings,
    validate_pool,
)
from envs.knobs import Knob, knob_range
from envs.sockshop import ROUTES, SERVICE_BY_NAME, Protocol, callees
from tests.envs._support import (
    DEFAULT_TWELVE,
    EXTENDED_TABLE,
    FIELD_OF,
    NOTEBOOK_TABLE,
    S,
    apply_one,
    full_pool,
    index_of,
    pool_of,
    raw_fields,
)

# --- tunable services -------------------------------------------------------------------------

def test_tunable_services_are_the_twelve_on_the_request_path() -> None:
    assert TUNABLE_SERVICES == DEFAULT_TWELVE
    reached = set().union(*(callees(route) for route in ROUTES.values()))
    assert set(TUNABLE_SERVICES) == reached
    assert "front-end" not in TUNABLE_SERVICES
    assert "queue-master" not in TUNABLE_SERVICES


def test_seed_services_are_all_but_front_end() -> None:
    assert len(CLASSIC_SERVICES) == 13
    assert tuple(s for s in SERVICE_BY_NAME if s != "front-end") == CLASSIC_SERVICES
    assert len(make_catalogue("classic", CLASSIC_SERVICES)) == 13 * 12  # the notebook's 156


@pytest.mark.parametrize("bad", [["carts", "cart"], ["nope"], ["carts", "frontend"]])
def test_unknown_service_is_an_error_naming_it(bad: list[str]) -> None:
    wrong = next(s for s in bad if s not in SERVICE_BY_NAME)
    with pytest.raises(ValueError, match=wrong):
        make_catalogue("classic", bad)
    with pytest.raises(ValueError, match=wrong):
        classic_initial_config(np.random.default_rng(0), bad)


def test_bad_service_lists_are_rejected() -> None:
    with pytest.raises(ValueError, match="more than once"):
        make_catalogue("classic", ["carts", "user", "carts"])
    with pytest.raises(ValueError, match="at least one"):
        make_catalogue("extended", [])
    with pytest.raises(TypeError, match="string"):
        make_catalogue("classic", "carts")
    with pytest.raises(ValueError, match="unknown action catalogue"):
        make_catalogue("bigger")  # type: ignore[arg-type]


def test_caller_chosen_services_keep_their_order() -> None:
    catalogue = make_catalogue("classic", ["user", "front-end"])
    assert catalogue.services == ("user", "front-end")
    assert catalogue.describe(0) == "user: tcp.maxConnections +20"
    assert catalogue.describe(12) == "front-end: tcp.maxConnections +20"


# --- sizes and the table ----------------------------------------------------------------------

def test_catalogue_sizes() -> None:
    seed = make_catalogue()
    assert seed.name == "classic"
    assert (len(seed), seed.actions_per_service, seed.noop_index) == (144, 12, None)
    extended = make_catalogue("extended")
    assert (len(extended), extended.actions_per_service) == (12 * 21 + 1, 21)
    assert extended.noop_index == len(extended) - 1 == 252
    assert seed.knobs == CLASSIC_KNOBS
    assert set(extended.knobs) == set(Knob)
    assert len(extended.knobs) == len(Knob)


@pytest.mark.parametrize(("name", "table"),
                         [("classic", NOTEBOOK_TABLE), ("extended", EXTENDED_TABLE)])
def test_every_index_moves_the_right_field_of_the_right_service(name: str, table: list) -> None:
    catalogue = make_catalogue(name)
    config = {s: full_pool() for s in DEFAULT_TWELVE}
    before = raw_fields(config)
    for s_index, service in enumerate(DEFAULT_TWELVE):
        for act, (knob, delta) in enumerate(table):
            index = s_index * len(table) + act
            action = catalogue.actions[index]
            assert (action.service, action.knob) == (service, knob)
            after = raw_fields(catalogue.apply(index, config))
            changed = {k for k in before if before[k] != after[k]}
            assert changed == {(service, FIELD_OF[knob])}, catalogue.describe(index)
            old, new = before[(service, FIELD_OF[knob])], after[(service, FIELD_OF[knob])]
            if delta is None:
                assert (old, new) == (False, True)
                assert action.kind is ActionKind.TOGGLE
            else:
                assert new - old == delta
                assert action.delta == delta
    if name == "extended":
        assert catalogue.apply(len(catalogue) - 1, config) == config


def test_index_of_inverts_the_numbering() -> None:
    catalogue = make_catalogue("extended")
    for i in range(len(catalogue)):
        assert catalogue.index_of(catalogue.actions[i]) == i
    with pytest.raises(ValueError, match="not in"):
        make_catalogue("classic").index_of(Action("carts", Knob.KEEPALIVE_PROBES, 1))


@pytest.mark.parametrize("name", ["classic", "extended"])
def test_rendered_table_is_the_one_in_the_docstring(name: str) -> None:
    table = render_action_table(name)
    assert table in actions.__doc__
    rows = table.splitlines()[2:]
    expected = EXTENDED_TABLE if name == "extended" else NOTEBOOK_TABLE
    assert len(rows) == len(expected) + (name == "extended")
    assert rows[0] == "| 0 | tcp.maxConnections | +20 |"
    assert rows[7] == "| 7 | tcp.connectTimeout | -50ms |"


def test_describe() -> None:
    extended = make_catalogue("extended")
    assert extended.describe(0) == "carts: tcp.maxConnections +20"
    assert extended.describe(21 + 9) == "carts-db: http.http2MaxRequests -50"
    assert extended.describe(6) == "carts: tcp.connectTimeout +200ms"
    assert extended.describe(15) == "carts: tcp.tcpKeepalive.time -300s"
    assert extended.describe(19) == "carts: http.idleTimeout -60000ms"
    assert extended.describe(20) == "carts: http.useClientProtocol toggle"
    assert extended.describe(11 * 21 + 11) == "user-db: http.maxRetries -10"
    assert extended.describe(252).startswith("no-op")


@pytest.mark.parametrize("index", [-1, 144, 10_000])
def test_out_of_range_index_is_a_value_error(index: int) -> None:
    catalogue = make_catalogue("classic")
    with pytest.raises(ValueError, match="out of range"):
        catalogue.apply(index, {})
    with pytest.raises(ValueError, match="out of range"):
        catalogue.describe(index)


def test_index_types() -> None:
    catalogue = make_catalogue("classic")
    assert catalogue.apply(np.int64(143), {}) == catalogue.apply(143, {})
    with pytest.raises(TypeError):
        catalogue.apply(1.0, {})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        catalogue.apply(True, {})


def test_inert_actions_are_http_knobs_of_tcp_services() -> None:
    seed = make_catalogue("classic")
    inert = seed.inert_indices()
    tcp_services = [s for s in DEFAULT_TWELVE if SERVICE_BY_NAME[s].protocol is Protocol.TCP]
    assert len(tcp_services) == 6
    assert len(inert) == 6 * 8
    for i in inert:
        action = seed.actions[i]
        assert action.service in tcp_services
        assert action.knob.value.startswith("http.")
    assert len(make_catalogue("extended").inert_indices()) == 6 * 11


# --- toggles and inputs -----------------------------------------------------------------------

def test_toggle_flips_the_effective_value_and_writes_it() -> None:
    act = index_of("extended", Knob.USE_CLIENT_PROTOCOL, None)
    on = apply_one("extended", act, None)
    assert on.http.use_client_protocol is True
    off = apply_one("extended", act, on)
    assert off.http.use_client_protocol is False


def test_toggle_refuses_a_rule_istio_rejects() -> None:
    act = index_of("extended", Knob.USE_CLIENT_PROTOCOL, None)
    upgrade = ConnectionPool(http=HttpSettings(h2_upgrade_policy=H2UpgradePolicy.UPGRADE))
    with pytest.raises(ValueError, match="h2UpgradePolicy"):
        apply_one("extended", act, upgrade)


def test_config_values_must_be_pools() -> None:
    with pytest.raises(TypeError, match="carts"):
        make_catalogue().apply(0, {"carts": {"tcp": {}}})  # type: ignore[dict-item]


# --- purity -----------------------------------------------------------------------------------

def test_apply_is_pure() -> None:
    catalogue = make_catalogue("extended")
    config = classic_initial_config(np.random.default_rng(3))
    config["front-end"] = full_pool()  # a service outside the catalogue
    snapshot = copy.deepcopy(config)
    pools_before = {s: id(p) for s, p in config.items()}
    for index in range(len(catalogue)):
        new = catalogue.apply(index, config)
        assert new is not config
        assert new["front-end"] == snapshot["front-end"]
    assert config == snapshot
    assert {s: id(p) for s, p in config.items()} == pools_before
    new = catalogue.apply(0, config)
    new["carts"] = ConnectionPool()
    assert config == snapshot
    # the no-op returns an equal but new mapping
    noop = catalogue.apply(catalogue.noop_index, config)
    assert noop == config
    assert noop is not config


# --- Istio's rules hold for everything the catalogue produces ---------------------------------

def istio_rule_violations(service: str, pool: ConnectionPool) -> list[str]:
    """Istio's validation rules (plus Envoy/Linux keepalive limits), written independently."""
    problems = []
    tcp, http = pool.tcp, pool.http
    if tcp is None and http is None:
        problems.append("connectionPool with neither tcp nor http")
    ints = {}
    durations = {}
    if tcp is not None:
        ints["maxConnections"] = tcp.max_connections
        durations["connectTimeout"] = tcp.connect_timeout_ms
        ka = tcp.tcp_keepalive
        if ka is not None:
            ints["probes"] = ka.probes
            for name, value in (("time", ka.time_ms), ("interval", ka.interval_ms)):
                durations[name] = value
                if value is not None and (value % S or not S <= value <= 32_767 * S):
                    problems.append(f"keepalive {name} {value} ms not whole seconds in 1..32767")
            if ka.probes is not None and not 1 <= ka.probes <= 127:
                problems.append(f"keepalive probes {ka.probes}")
    if http is not None:
        ints.update(pending=http.http1_max_pending_requests, requests=http.http2_max_requests,
                    per_connection=http.max_requests_per_connection, retries=http.max_retries)
        durations["idleTimeout"] = http.idle_timeout_ms
        if http.use_client_protocol and http.h2_upgrade_policy is H2UpgradePolicy.UPGRADE:
            problems.append("UPGRADE with useClientProtocol")
    for name, value in {**ints, **durations}.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{name} = {value!r} is not an integer")
        elif not 0 <= value <= INT32_MAX:
            problems.append(f"{name} = {value} outside 0..INT32_MAX")
    for name, value in durations.items():
        if isinstance(value, int) and value < 1:
            problems.append(f"{name} = {value} ms below 1 ms")
    return [f"{service}: {p}" for p in problems]


def test_random_walks_only_produce_valid_pools() -> None:
    catalogue = make_catalogue("extended")
    rng = np.random.default_rng(11)
    starts = [istio_default_config(), classic_initial_config(np.random.default_rng(5))]
    for config in starts:
        for _ in range(1_500):
            config = catalogue.apply(int(rng.integers(len(catalogue))), config)
            for service, pool in config.items():
                assert istio_rule_violations(service, pool) == []
                assert validate_pool(pool) == []
    # and from every bound: a pool at each knob's floor and ceiling, every action
    for knob in Knob:
        if knob is Knob.USE_CLIENT_PROTOCOL:
            continue
        for value in knob_range(knob):
            config = {s: pool_of(knob, value) for s in DEFAULT_TWELVE}
            for index in range(len(catalogue)):
                for service, pool in catalogue.apply(index, config).items():
                    assert istio_rule_violations(service, pool) == []
                    assert validate_pool(pool) == []


def test_the_checker_catches_violations() -> None:
    """The rule checker above must itself be able to fail."""
    assert istio_rule_violations("x", pool_of(Knob.MAX_CONNECTIONS, -1))
    assert istio_rule_violations("x", pool_of(Knob.MAX_RETRIES, INT32_MAX + 1))
    assert istio_rule_violations("x", pool_of(Knob.CONNECT_TIMEOUT_MS, 0))
    assert istio_rule_violations("x", pool_of(Knob.KEEPALIVE_TIME_MS, 1_500))
    assert istio_rule_violations("x", ConnectionPool())


# --- initial configurations -------------------------------------------------------------------

def test_classic_initial_config_is_reproducible() -> None:
    a = classic_initial_config(np.random.default_rng(123))
    b = classic_initial_config(np.random.default_rng(123))
    c = classic_initial_config(np.random.default_rng(124))
    assert a == b
    assert a != c


def test_classic_initial_config_follows_the_documented_draw_order() -> None:
    config = classic_initial_config(np.random.default_rng(7))
    draws = np.random.default_rng(7).integers(1, 100, size=(12, 6), endpoint=True)
    assert tuple(config) == DEFAULT_TWELVE
    for row, service in zip(draws, DEFAULT_TWELVE, strict=True):
        pool = config[service]
        assert (pool.tcp.max_connections, pool.tcp.connect_timeout_ms,
                pool.http.http1_max_pending_requests, pool.http.http2_max_requests,
                pool.http.max_requests_per_connection, pool.http.max_retries) == tuple(row)


def test_classic_initial_config_sets_the_six_knobs_within_range() -> None:
    seen = set()
    for seed in range(20):
        config = classic_initial_config(np.random.default_rng(seed))
        for service, pool in config.items():
            fields = {k: v for k, v in raw_fields({service: pool}).items() if v is not None}
            assert {f for _, f in fields} == {FIELD_OF[k] for k in CLASSIC_KNOBS}
            assert all(1 <= v <= 100 for v in fields.values())
            seen.update(fields.values())
    assert {1, 100} <= seen  # both ends are drawn
    # TCP-only services carry the notebook's (inert) http fields too
    assert config["carts-db"].http.max_retries is not None
    small = classic_initial_config(np.random.default_rng(0), ["user"], upper=1)
    assert all(v == 1 for v in raw_fields(small).values() if v is not None)


def test_classic_initial_config_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError, match="Generator"):
        classic_initial_config(0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="upper"):
        classic_initial_config(np.random.default_rng(0), upper=0)
    with pytest.raises(ValueError, match="upper"):
        classic_initial_config(np.random.default_rng(0), upper=INT32_MAX + 1)


def test_istio_default_config_has_no_rules() -> None:
    a = istio_default_config()
    assert a == {}
    a["carts"] = ConnectionPool()
    assert istio_default_config() == {}


# ----- the ladder catalogue (MeshEnv v1's default) -------------------------------------------


def test_ladder_catalogue_layout():
    from envs.actions import CONTROL_SERVICES, LADDERS

    c = make_catalogue("ladder")
    assert c.services == CONTROL_SERVICES and "front-end" in c.services
    assert "queue-master" not in c.services
    assert c.actions_per_service == 12 and len(c) == 13 * 12 + 1 == 157
    assert c.noop_index == 156
    assert set(LADDERS) == set(c.knobs)
    assert c.describe(0) == "carts: tcp.maxConnections one rung up"
    assert c.describe(1) == "carts: tcp.maxConnections one rung down"


def test_rungs_leave_istios_unlimited_default_in_a_few_steps():
    c = make_catalogue("ladder")
    down = c.services.index("front-end") * 12 + 1  # front-end maxConnections one rung down
    config: dict = {}
    values = []
    for _ in range(6):
        config = c.apply(down, config)
        values.append(config["front-end"].tcp.max_connections)
    assert values == [1024, 256, 128, 64, 32, 16]


def test_rungs_from_between_rungs_and_at_the_ends():
    from envs.actions import next_rung
    from envs.istio import INT32_MAX

    assert next_rung(Knob.MAX_CONNECTIONS, 37, +1) == 64
    assert next_rung(Knob.MAX_CONNECTIONS, 37, -1) == 32
    assert next_rung(Knob.MAX_CONNECTIONS, 1, -1) == 1
    assert next_rung(Knob.MAX_CONNECTIONS, INT32_MAX, +1) == INT32_MAX
    assert next_rung(Knob.CONNECT_TIMEOUT_MS, 10_000, -1) == 1_000
    assert next_rung(Knob.CONNECT_TIMEOUT_MS, 10_000, +1) == 10_000  # the top rung
    assert next_rung(Knob.MAX_RETRIES, 50, +1) == 64


def test_a_rung_action_needs_a_laddered_knob_and_a_unit_step():
    from envs.actions import Action, ActionKind

    with pytest.raises(ValueError, match="moves a laddered knob by"):
        Action("carts", Knob.MAX_CONNECTIONS, 2, ActionKind.RUNG)
    with pytest.raises(ValueError, match="moves a laddered knob by"):
        Action("carts", Knob.KEEPALIVE_PROBES, 1, ActionKind.RUNG)


# ----- the setpoint catalogue -------------------------------------------------------------------


def test_setpoint_catalogue_sets_any_rung_in_one_step():
    from envs.actions import CONTROL_SERVICES, LADDERS
    from envs.istio import INT32_MAX

    c = make_catalogue("setpoint")
    per_service = sum(len(LADDERS[k]) for k in c.knobs)
    assert c.services == CONTROL_SERVICES and c.actions_per_service == per_service == 42
    assert len(c) == 13 * 42 + 1 and c.noop_index == len(c) - 1
    front = c.services.index("front-end") * per_service
    names = [c.describe(front + i) for i in range(per_service)]
    throttle = front + names.index("front-end: http.http2MaxRequests set 16")
    config = c.apply(throttle, {})  # Istio's unlimited default to 16 in one action
    assert config["front-end"].http.http2_max_requests == 16
    assert "front-end: tcp.connectTimeout set 100ms" in names
    assert "front-end: http.maxRetries set unlimited" in names
    back = c.apply(front + names.index("front-end: http.http2MaxRequests set unlimited"), config)
    assert back["front-end"].http.http2_max_requests == INT32_MAX


def test_a_set_action_needs_a_rung_of_a_laddered_knob():
    from envs.actions import Action, ActionKind

    with pytest.raises(ValueError, match="one of its rungs"):
        Action("carts", Knob.MAX_CONNECTIONS, 3, ActionKind.SET)
    with pytest.raises(ValueError, match="one of its rungs"):
        Action("carts", Knob.KEEPALIVE_PROBES, 1, ActionKind.SET)


def test_restore_undoes_the_whole_random_start_in_one_action():
    """``setpoint_restore``: setpoint's blocks, then restore and the no-op; restore removes the
    rule of every service the catalogue tunes (Istio's defaults) and nothing else."""
    from envs.actions import Action, ActionKind

    c = make_catalogue("setpoint_restore")
    setpoint = make_catalogue("setpoint")
    assert c.actions[:-2] == setpoint.actions[:-1] and c.global_actions == 2
    restore = len(c) - 2
    assert c.noop_index == len(c) - 1 == 547
    assert c.action(restore).kind is ActionKind.RESTORE
    assert "restore Istio's defaults" in c.describe(restore)
    start = classic_initial_config(np.random.default_rng(3), c.services)
    untuned = make_catalogue("setpoint_restore", services=("carts", "orders"))
    assert c.apply(restore, start) == {}
    kept = untuned.apply(len(untuned) - 2, start)
    assert set(kept) == set(start) - {"carts", "orders"}
    assert all(kept[s] == start[s] for s in kept)
    assert start == classic_initial_config(np.random.default_rng(3), c.services)  # pure
    assert c.action(restore).inert is False
    with pytest.raises(ValueError, match="global"):
        Action("carts", None, 0, ActionKind.RESTORE)
    with pytest.raises(ValueError, match="global"):
        Action(None, Knob.MAX_CONNECTIONS, 0, ActionKind.RESTORE)


def test_reset_undoes_one_service_and_leaves_the_others():
    """``setpoint_reset``: each service's block is setpoint's 42 acts plus a reset (act 42) that
    removes that service's rule alone; the no-op is last."""
    from envs.actions import Action, ActionKind, render_action_table

    c = make_catalogue("setpoint_reset")
    setpoint = make_catalogue("setpoint")
    assert c.actions_per_service == 43 and len(c) == 13 * 43 + 1 == 560
    assert c.global_actions == 1 and c.noop_index == 559
    front_end = c.services.index("front-end")
    reset_fe = front_end * 43 + 42
    assert c.action(reset_fe) == Action("front-end", None, 0, ActionKind.RESET)
    assert c.describe(reset_fe) == ("front-end: reset to Istio's defaults "
                                    "(its DestinationRule removed)")
    for i, service in enumerate(c.services):  # the setpoint acts keep their order
        assert c.actions[i * 43:i * 43 + 42] == setpoint.actions[i * 42:(i + 1) * 42]
        assert c.action(i * 43 + 42).service == service
    start = classic_initial_config(np.random.default_rng(3), c.services)
    after = c.apply(reset_fe, start)
    assert "front-end" not in after and set(after) == set(start) - {"front-end"}
    assert all(after[s] == start[s] for s in after)
    assert c.apply(reset_fe, {}) == {}  # from Istio's defaults, a reset changes nothing
    assert start == classic_initial_config(np.random.default_rng(3), c.services)  # pure
    assert not c.action(reset_fe).inert
    assert "| 42 | (the service's whole rule) | reset to Istio's defaults |" in \
        render_action_table("setpoint_reset")
    with pytest.raises(ValueError, match="reset action"):
        Action("carts", Knob.MAX_CONNECTIONS, 0, ActionKind.RESET)
    with pytest.raises(ValueError, match="unknown service"):
        Action(None, None, 0, ActionKind.RESET)
