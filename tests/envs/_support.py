"""Helpers shared by the tests of envs.actions, envs.knobs and MeshEnv: the catalogue tables
written out independently of the modules, pools, and a small MeshEnv on the simulator."""

from __future__ import annotations

import numpy as np
import pytest

from envs.actions import make_catalogue
from envs.backends.lease import leased_replicas
from envs.istio import ConnectionPool, HttpSettings, TcpKeepalive, TcpSettings
from envs.knobs import Knob, with_knob
from envs.mesh_env import MeshEnv
from envs.settings import classic_env_config

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
    return with_knob(None, knob, value)


def apply_one(name: str, act: int, pool: ConnectionPool | None) -> ConnectionPool:
    """Apply ``act`` of the first service's block to ``pool`` and return carts' new pool."""
    catalogue = make_catalogue(name, ["carts"])
    config = {} if pool is None else {"carts": pool}
    return catalogue.apply(act, config)["carts"]


def index_of(name: str, knob: Knob, delta: int | None) -> int:
    table = NOTEBOOK_TABLE if name == "classic" else EXTENDED_TABLE
    return table.index((knob, delta))


# --- MeshEnv on the simulator ------------------------------------------------------------------

#: The notebook's setup (closed loop, classic score) with a small load so each step is quick:
#: 2..3 users, 30 requests each. The v1 defaults (open load, SLO objective) have their own tests.
FAST = classic_env_config(users_range=(2, 3), requests_per_user=30, episode_len=4)


@pytest.fixture(autouse=True)
def _no_leaked_leases():
    assert leased_replicas() == {}
    yield
    assert leased_replicas() == {}, "an env was not closed"


def make(**overrides) -> MeshEnv:
    return MeshEnv({**FAST, **overrides})


def channel(env: MeshEnv, obs: np.ndarray, name: str) -> float:
    return float(obs[env.observation_names.index(name)])
