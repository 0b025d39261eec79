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
    Knob,
    classic_initial_config,
    istio_default_config,
    knob_value,
    make_catalogue,
    render_action_table,
)
from envs.istio import (
    INT32_MAX,
    ConnectionPool,
    H2UpgradePolicy,
    HttpSettings,
    TcpKeepalive,
    TcpSettings,
    validate_pool,
)
from envs.sockshop import ROUTES, SERVICE_BY_NAME, Protocol, callees

S = 1_000  # ms per second

# The tables written out independently of the module: (knob, delta) per act.
NOTEBOOK_TABLE = [
    (Knob.MAX_CONNECTIONS, 20), (Knob.MAX_CONNECTIONS, -5),
    (Knob.HTTP1_MAX_PENDING_REQUESTS, 40), (Knob.HTTP1_MAX_PENDING_REQUESTS, -10),
    (Knob.MAX_REQUESTS_PER_CONNECTION, 40), (Knob.MAX_REQUESTS_PER_CONNECTION, -10),
    (Knob.CONNECT_TIMEOUT_MS, 200), (Knob.CONNECT_TIMEOUT_MS, -50),
    (Knob.HTTP2_MAX_REQUESTS, 200), (Knob.HTTP2_MAX_REQUESTS, -50),
    (Knob.MAX_RETRIES, 40), (Knob.MAX_RETRIES, -10),
]
EXTENDED_TABLE = [
    *NOTEBOOK_TABLE,
    (Knob.KEEPALIVE_PROBES, 1), (Knob.KEEPALIVE_PROBES, -1),
    (Knob.KEEPALIVE_TIME_MS, 300 * S), (Knob.KEEPALIVE_TIME_MS, -300 * S),
    (Knob.KEEPALIVE_INTERVAL_MS, 15 * S), (Knob.KEEPALIVE_INTERVAL_MS, -15 * S),
    (Knob.HTTP_IDLE_TIMEOUT_MS, 60 * S), (Knob.HTTP_IDLE_TIMEOUT_MS, -60 * S),
    (Knob.USE_CLIENT_PROTOCOL, None),  # toggle
]
DEFAULT_TWELVE = ("carts", "carts-db", "catalogue", "catalogue-db", "orders", "orders-db",
                  "payment", "rabbitmq", "session-db", "shipping", "user", "user-db")


def full_pool(base: int = 1_000) -> ConnectionPool:
    """A pool with every catalogue knob set explicitly, far from every bound."""
    return ConnectionPool(
        tcp=TcpSettings(max_connections=base, connect_timeout_ms=base,
                        tcp_keepalive=TcpKeepalive(probes=50, time_ms=1_000 * S,
                                                   interval_ms=100 * S)),
        http=HttpSettings(http1_max_pending_requests=base, http2_max_requests=base,
                          max_requests_per_connection=base, max_retries=base,
                          idle_timeout_ms=600 * S, use_client_protocol=False),
    )


def raw_fields(config: dict[str, ConnectionPool]) -> dict[tuple[str, str], object]:
    """Every field of every pool, flattened (unset fields included as None)."""
    out: dict[tuple[str, str], object] = {}
    for service, pool in config.items():
        tcp = pool.tcp or TcpSettings()
        ka = tcp.tcp_keepalive or TcpKeepalive()
        http = pool.http or HttpSettings()
        for prefix, obj in (("tcp", tcp), ("ka", ka), ("http", http)):
            for name, value in vars(obj).items():
                if name != "tcp_keepalive":
                    out[(service, f"{prefix}.{name}")] = value
    return out


# Where each knob lands in raw_fields(), written out independently of the module.
FIELD_OF = {
    Knob.MAX_CONNECTIONS: "tcp.max_connections",
    Knob.CONNECT_TIMEOUT_MS: "tcp.connect_timeout_ms",
    Knob.KEEPALIVE_PROBES: "ka.probes",
    Knob.KEEPALIVE_TIME_MS: "ka.time_ms",
    Knob.KEEPALIVE_INTERVAL_MS: "ka.interval_ms",
    Knob.HTTP1_MAX_PENDING_REQUESTS: "http.http1_max_pending_requests",
    Knob.HTTP2_MAX_REQUESTS: "http.http2_max_requests",
    Knob.MAX_REQUESTS_PER_CONNECTION: "http.max_requests_per_connection",
    Knob.MAX_RETRIES: "http.max_retries",
    Knob.HTTP_IDLE_TIMEOUT_MS: "http.idle_timeout_ms",
    Knob.USE_CLIENT_PROTOCOL: "http.use_client_protocol",
}


def pool_of(knob: Knob, value: int | bool) -> ConnectionPool:
    """A pool with only ``knob`` set."""
    return actions.with_knob(None, knob, value)


def apply_one(name: str, act: int, pool: ConnectionPool | None) -> ConnectionPool:
    """Apply ``act`` of the first service's block to ``pool`` and return carts' new pool."""
    catalogue = make_catalogue(name, ["carts"])
    config = {} if pool is None else {"carts": pool}
    return catalogue.apply(act, config)["carts"]


def index_of(name: str, knob: Knob, delta: int | None) -> int:
    table = NOTEBOOK_TABLE if name == "classic" else EXTENDED_TABLE
    return table.index((knob, delta))


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


# --- floors, caps, unset fields ---------------------------------------------------------------

@pytest.mark.parametrize(("knob", "start", "expected"), [
    (Knob.MAX_CONNECTIONS, 3, 1),
    (Knob.HTTP1_MAX_PENDING_REQUESTS, 10, 1),
    (Knob.MAX_REQUESTS_PER_CONNECTION, 2, 1),
    (Knob.CONNECT_TIMEOUT_MS, 30, 1),
    (Knob.HTTP2_MAX_REQUESTS, 50, 1),
    (Knob.MAX_RETRIES, 1, 1),
    (Knob.KEEPALIVE_PROBES, 1, 1),
    (Knob.KEEPALIVE_TIME_MS, 200 * S, 1 * S),
    (Knob.KEEPALIVE_INTERVAL_MS, 10 * S, 1 * S),
    (Knob.HTTP_IDLE_TIMEOUT_MS, 59 * S, 1),
])
def test_decrements_stop_at_the_floor(knob: Knob, start: int, expected: int) -> None:
    negative = next(d for k, d in EXTENDED_TABLE if k is knob and d is not None and d < 0)
    pool = apply_one("extended", index_of("extended", knob, negative), pool_of(knob, start))
    assert knob_value(pool, knob) == expected
    assert actions._raw(pool, knob) == expected  # written explicitly


@pytest.mark.parametrize(("knob", "start", "expected"), [
    (Knob.MAX_CONNECTIONS, INT32_MAX - 5, INT32_MAX),
    (Knob.HTTP1_MAX_PENDING_REQUESTS, INT32_MAX, INT32_MAX),
    (Knob.MAX_REQUESTS_PER_CONNECTION, INT32_MAX - 39, INT32_MAX),
    (Knob.CONNECT_TIMEOUT_MS, INT32_MAX - 1, INT32_MAX),
    (Knob.HTTP2_MAX_REQUESTS, INT32_MAX - 100, INT32_MAX),
    (Knob.MAX_RETRIES, INT32_MAX - 40, INT32_MAX),
    (Knob.KEEPALIVE_PROBES, 127, 127),
    (Knob.KEEPALIVE_TIME_MS, 32_700 * S, 32_767 * S),
    (Knob.KEEPALIVE_INTERVAL_MS, 32_760 * S, 32_767 * S),
    (Knob.HTTP_IDLE_TIMEOUT_MS, INT32_MAX - 1, INT32_MAX),
])
def test_increments_stop_at_the_ceiling(knob: Knob, start: int, expected: int) -> None:
    positive = next(d for k, d in EXTENDED_TABLE if k is knob and d is not None and d > 0)
    pool = apply_one("extended", index_of("extended", knob, positive), pool_of(knob, start))
    assert actions._raw(pool, knob) == expected
    assert expected <= INT32_MAX


@pytest.mark.parametrize(("knob", "delta", "expected"), [
    (Knob.MAX_CONNECTIONS, 20, INT32_MAX),           # unlimited stays (capped) unlimited
    (Knob.MAX_CONNECTIONS, -5, INT32_MAX - 5),
    (Knob.HTTP1_MAX_PENDING_REQUESTS, -10, INT32_MAX - 10),
    (Knob.HTTP2_MAX_REQUESTS, -50, INT32_MAX - 50),
    (Knob.MAX_RETRIES, 40, INT32_MAX),
    (Knob.MAX_REQUESTS_PER_CONNECTION, -10, INT32_MAX - 10),
    (Knob.CONNECT_TIMEOUT_MS, 200, 10_200),          # Istio's 10 s default
    (Knob.CONNECT_TIMEOUT_MS, -50, 9_950),
    (Knob.KEEPALIVE_PROBES, 1, 10),                  # Linux: 9 probes
    (Knob.KEEPALIVE_TIME_MS, 300 * S, 7_500 * S),    # Linux: 7200 s
    (Knob.KEEPALIVE_INTERVAL_MS, -15 * S, 60 * S),   # Linux: 75 s
    (Knob.HTTP_IDLE_TIMEOUT_MS, -60 * S, 3_540 * S),  # Istio: 1 h
])
def test_unset_field_materialises_the_effective_default(knob: Knob, delta: int,
                                                        expected: int) -> None:
    act = index_of("extended", knob, delta)
    # no rule at all, and a rule that leaves this field unset
    for start in (None, pool_of(Knob.MAX_RETRIES if knob is not Knob.MAX_RETRIES
                                else Knob.MAX_CONNECTIONS, 7)):
        pool = apply_one("extended", act, start)
        assert actions._raw(pool, knob) == expected
        if start is not None:  # the other field survives
            other = Knob.MAX_RETRIES if knob is not Knob.MAX_RETRIES else Knob.MAX_CONNECTIONS
            assert actions._raw(pool, other) == 7


@pytest.mark.parametrize("knob", [Knob.MAX_CONNECTIONS, Knob.HTTP1_MAX_PENDING_REQUESTS,
                                  Knob.HTTP2_MAX_REQUESTS, Knob.MAX_REQUESTS_PER_CONNECTION,
                                  Knob.MAX_RETRIES])
def test_explicit_zero_limit_means_unlimited(knob: Knob) -> None:
    negative = next(d for k, d in NOTEBOOK_TABLE if k is knob and d < 0)
    pool = apply_one("classic", index_of("classic", knob, negative), pool_of(knob, 0))
    assert actions._raw(pool, knob) == INT32_MAX + negative


def test_http_idle_timeout_falls_back_to_the_tcp_idle_timeout() -> None:
    down = index_of("extended", Knob.HTTP_IDLE_TIMEOUT_MS, -60 * S)
    up = index_of("extended", Knob.HTTP_IDLE_TIMEOUT_MS, 60 * S)
    tcp_idle = ConnectionPool(tcp=TcpSettings(idle_timeout_ms=120 * S))
    pool = apply_one("extended", down, tcp_idle)
    assert pool.http.idle_timeout_ms == 60 * S
    assert pool.tcp == tcp_idle.tcp
    disabled = ConnectionPool(tcp=TcpSettings(idle_timeout_ms=0))  # 0s: no idle timeout
    assert knob_value(disabled, Knob.HTTP_IDLE_TIMEOUT_MS) == float(INT32_MAX)
    assert apply_one("extended", up, disabled).http.idle_timeout_ms == INT32_MAX


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


def test_keepalive_moves_in_whole_seconds() -> None:
    time_up = index_of("extended", Knob.KEEPALIVE_TIME_MS, 300 * S)
    interval_down = index_of("extended", Knob.KEEPALIVE_INTERVAL_MS, -15 * S)
    # Envoy receives whole seconds: 1.5 s is 1 s, 0.5 s is 0 s (then the 1 s floor)
    assert apply_one("extended", time_up, pool_of(Knob.KEEPALIVE_TIME_MS, 1_500)) \
        .tcp.tcp_keepalive.time_ms == 301 * S
    assert apply_one("extended", interval_down, pool_of(Knob.KEEPALIVE_INTERVAL_MS, 500)) \
        .tcp.tcp_keepalive.interval_ms == 1 * S
    with pytest.raises(ValueError, match="whole seconds"):
        Action("carts", Knob.KEEPALIVE_TIME_MS, 1_500)


@pytest.mark.parametrize(("knob", "bad"), [
    (Knob.MAX_CONNECTIONS, -1),
    (Knob.MAX_RETRIES, INT32_MAX + 1),
    (Knob.CONNECT_TIMEOUT_MS, 0),
    (Knob.HTTP_IDLE_TIMEOUT_MS, -5),
])
def test_invalid_input_field_is_an_error_naming_it(knob: Knob, bad: int) -> None:
    delta = next(d for k, d in EXTENDED_TABLE if k is knob)
    with pytest.raises(ValueError, match=rf"carts: {knob.value}"):
        apply_one("extended", index_of("extended", knob, delta), pool_of(knob, bad))


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


# --- knob_value -------------------------------------------------------------------------------

def test_knob_value_reads_effective_values() -> None:
    assert knob_value(None, Knob.MAX_CONNECTIONS) == float(INT32_MAX)
    assert knob_value(None, Knob.MAX_REQUESTS_PER_CONNECTION) == float(INT32_MAX)
    assert knob_value(None, Knob.CONNECT_TIMEOUT_MS) == 10_000.0
    assert knob_value(None, Knob.KEEPALIVE_PROBES) == 9.0
    assert knob_value(None, Knob.KEEPALIVE_TIME_MS) == 7_200_000.0
    assert knob_value(None, Knob.KEEPALIVE_INTERVAL_MS) == 75_000.0
    assert knob_value(None, Knob.HTTP_IDLE_TIMEOUT_MS) == 3_600_000.0
    assert knob_value(None, Knob.USE_CLIENT_PROTOCOL) == 0.0
    pool = full_pool(base=42)
    for knob in CLASSIC_KNOBS:
        assert knob_value(pool, knob) == 42.0
    assert knob_value(pool_of(Knob.KEEPALIVE_TIME_MS, 2_999), Knob.KEEPALIVE_TIME_MS) == 2_000.0
    assert knob_value(pool_of(Knob.USE_CLIENT_PROTOCOL, True), Knob.USE_CLIENT_PROTOCOL) == 1.0
    assert knob_value(pool_of(Knob.MAX_RETRIES, 0), Knob.MAX_RETRIES) == float(INT32_MAX)


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
        for value in actions.knob_range(knob):
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

def test_seed_initial_config_is_reproducible() -> None:
    a = classic_initial_config(np.random.default_rng(123))
    b = classic_initial_config(np.random.default_rng(123))
    c = classic_initial_config(np.random.default_rng(124))
    assert a == b
    assert a != c


def test_seed_initial_config_follows_the_documented_draw_order() -> None:
    config = classic_initial_config(np.random.default_rng(7))
    draws = np.random.default_rng(7).integers(1, 100, size=(12, 6), endpoint=True)
    assert tuple(config) == DEFAULT_TWELVE
    for row, service in zip(draws, DEFAULT_TWELVE, strict=True):
        pool = config[service]
        assert (pool.tcp.max_connections, pool.tcp.connect_timeout_ms,
                pool.http.http1_max_pending_requests, pool.http.http2_max_requests,
                pool.http.max_requests_per_connection, pool.http.max_retries) == tuple(row)


def test_seed_initial_config_sets_the_six_knobs_within_range() -> None:
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


def test_seed_initial_config_rejects_bad_arguments() -> None:
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
