"""The service profile of SockShop under Istio: plain data the simulator (and the future ``local``
real-Envoy backend) read.

Every number says where it came from. Three kinds of source:

* **measured** — the original notebook's Locust table (50 users, 1 000 requests, the original system
  on GKE) or the machine notes (``../shared/reference/machine-notes.md``);
* **documented** — Istio / Envoy / driver documentation and source (``istio-envoy.md``,
  ``sockshop.md``);
* **fitted** — chosen so that the simulator reproduces the notebook's table
  (``experiments/calibrate_sim.py`` checks it); these are the front-end's and the services'
  CPU demand per operation, whose split between services the notebook's table cannot pin down.

Units: durations in milliseconds, CPU work in *milliseconds of one full core* (a service with a
300 m CPU limit needs ``work / 0.3`` ms of wall time when it runs alone), capacities in cores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

# ---------------------------------------------------------------------------------------------
# Sidecar (Envoy) costs
# ---------------------------------------------------------------------------------------------

#: Latency one proxy pass adds (one direction through one sidecar), lognormal. The Istio
#: performance page quotes ~2.65 ms at p90 per proxy (documented); with sigma 0.5 the median is
#: 2.65 / exp(1.2816 * 0.5) = 1.40 ms. A hop crosses the caller's and the callee's sidecar on
#: the way in and again on the way out.
SIDECAR_PASS_P90_MS = 2.65
SIDECAR_PASS_SIGMA = 0.5
#: CPU one proxy pass costs (machine notes: ~0.1-0.3 ms CPU per request per proxy pass,
#: measured on real Envoy 1.40). Sidecars run in their own container with their own CPU budget,
#: so this is not charged to the application's CPU limit; kept here for the ``local`` backend.
SIDECAR_PASS_CPU_MS = 0.2

#: Time to establish one new upstream connection between two sidecars: TCP handshake plus the
#: Istio mTLS (TLS 1.3, ECDSA P-256) handshake, lognormal. Estimate: 2-3 in-cluster round trips
#: of ~0.3 ms plus ~0.5-1 ms of handshake CPU on each proxy gives ~2 ms median; the long tail
#: (sigma 0.6: p90 4.3 ms, p99 8 ms) stands for CPU contention on a busy node. Envoy's
#: ``connect_timeout`` covers the TLS handshake too (Envoy raises ``Connected`` only after it),
#: so a ``connectTimeout`` of a few ms fails a share of connects with 503 UF.
CONNECT_MEDIAN_MS = 2.0
CONNECT_SIGMA = 0.6
#: A refused connection (service down: RST from the node) fails after about one round trip.
CONNECT_REFUSED_MS = 0.3
#: Inbound sidecar to the application over loopback (plain TCP): small and never near a
#: ``connectTimeout`` (Istio's minimum is 1 ms); added to the latency, no failure modelled.
INBOUND_CONNECT_MS = 0.1


# ---------------------------------------------------------------------------------------------
# The platform: per-hop costs of the network and the sidecars where the mesh runs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Platform:
    """Where the mesh runs: what one hop costs outside the services' own work.

    These are properties of the network and the sidecars' machine, not of SockShop: the same
    services cost less per hop on loopback than across a cluster's nodes. All durations in ms;
    every lognormal is given by its median and sigma.

    Attributes:
        name: a label (``"cluster"``, ``"loopback"``).
        sidecar_pass_median_ms, sidecar_pass_sigma: latency one proxy pass adds (one direction
            through one sidecar; a hop crosses the caller's and the callee's sidecar on the way
            in and again on the way out), lognormal.
        connect_median_ms, connect_sigma: time to establish one new sidecar → sidecar
            connection (TCP + mTLS handshake; Envoy's ``connect_timeout`` covers both),
            lognormal.
        connect_refused_ms: time for a refused connection (service down) to fail.
        inbound_connect_ms: the callee's sidecar → application connect (plain TCP on the pod's
            loopback): added to the latency, never failing.
        source: where the numbers come from.
    """

    name: str
    sidecar_pass_median_ms: float
    sidecar_pass_sigma: float
    connect_median_ms: float
    connect_sigma: float
    connect_refused_ms: float
    inbound_connect_ms: float
    source: str = ""

    def __post_init__(self) -> None:
        for field_name in ("sidecar_pass_median_ms", "connect_median_ms"):
            v = getattr(self, field_name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ValueError(f"Platform.{field_name} must be a positive number of ms, "
                                 f"got {v!r}")
        for field_name in ("sidecar_pass_sigma", "connect_sigma", "connect_refused_ms",
                           "inbound_connect_ms"):
            v = getattr(self, field_name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ValueError(f"Platform.{field_name} must be a finite number >= 0, "
                                 f"got {v!r}")

    def connect_quantile_ms(self, q: float) -> float:
        """The ``q`` quantile (0 < q < 1) of the connect time, ms."""
        return self.connect_median_ms * math.exp(NormalDist().inv_cdf(q) * self.connect_sigma)

    def sidecar_pass_quantile_ms(self, q: float) -> float:
        """The ``q`` quantile (0 < q < 1) of one proxy pass, ms."""
        return self.sidecar_pass_median_ms * math.exp(
            NormalDist().inv_cdf(q) * self.sidecar_pass_sigma)


#: The loopback platform's figures (:data:`LOOPBACK`), measured on 2026-11-27 23:03 UTC on a
#: 2-core machine (shared with other work) by ``python -m envs.backends.local.platform_probe
#: --replica 5 --rounds 600``; raw samples in
#: ``envs/backends/local/measurements/loopback_probe_2026-11-27.json``
#: (``--refit`` reproduces the fit from them). One proxy pass: fitted to 4 800 round trips
#: through a caller's and a callee's sidecar against 4 800 straight to the application (p50
#: 0.69 vs 0.24 ms, p90 1.58 vs 0.62 ms) → median 0.053 ms, sigma 1.35 (p90 0.30 ms): Envoy on
#: loopback is fast but, on 2 busy cores, has a long scheduling tail. Connect: Envoy's own
#: ``upstream_cx_connect_ms`` of 13 086 sidecar → sidecar connections (TCP + mTLS; Envoy
#: records whole ms: 80.6 % under 1 ms, 15.4 % 1–2 ms, 2.8 % 2–3 ms, 0.8 % 3–4 ms), interval
#: maximum likelihood → median 0.50 ms, sigma 0.81 (p99 3.3 ms). Refused connect and the
#: sidecar → application connect: plain loopback TCP, 0.016 and 0.019 ms (medians). Not held by
#: this lognormal: the shares of connects that actually time out (~6 % at each of 1, 2 and 3 ms,
#: ``loopback_probe_timeouts_2026-11-27.json`` beside the samples; see the simulator's README).
_LOOPBACK_PASS_MEDIAN_MS = 0.053
_LOOPBACK_PASS_SIGMA = 1.35
_LOOPBACK_CONNECT_MEDIAN_MS = 0.50
_LOOPBACK_CONNECT_SIGMA = 0.81
_LOOPBACK_REFUSED_MS = 0.016
_LOOPBACK_INBOUND_CONNECT_MS = 0.019
_LOOPBACK_SOURCE = ("measured: python -m envs.backends.local.platform_probe (2026-11-27, "
                    "envs/backends/local/measurements/loopback_probe_2026-11-27.json)")

#: A Kubernetes cluster with Istio's sidecars and mTLS (the notebook's GKE setting): the constants
#: above. The simulator's default platform; ``calibrate_sim.py`` holds on it.
CLUSTER = Platform(
    name="cluster",
    sidecar_pass_median_ms=SIDECAR_PASS_P90_MS / math.exp(1.2815516 * SIDECAR_PASS_SIGMA),
    sidecar_pass_sigma=SIDECAR_PASS_SIGMA, connect_median_ms=CONNECT_MEDIAN_MS,
    connect_sigma=CONNECT_SIGMA, connect_refused_ms=CONNECT_REFUSED_MS,
    inbound_connect_ms=INBOUND_CONNECT_MS,
    source="documented (Istio's 2.65 ms p90 per proxy) and estimated (TCP + mTLS set-up)")

#: The ``local`` backend's mesh: every Envoy on one machine's loopback, mTLS between sidecars.
#: Measured with ``python -m envs.backends.local.platform_probe --replica 5`` (see that module:
#: zero-work requests straight to a service's application and through a caller's sidecar,
#: with every connection reused and with ``maxRequestsPerConnection: 1``, while Locust drives
#: the reference load with 5 users; lognormals fitted to the differences).
LOOPBACK = Platform(
    name="loopback",
    sidecar_pass_median_ms=_LOOPBACK_PASS_MEDIAN_MS, sidecar_pass_sigma=_LOOPBACK_PASS_SIGMA,
    connect_median_ms=_LOOPBACK_CONNECT_MEDIAN_MS, connect_sigma=_LOOPBACK_CONNECT_SIGMA,
    connect_refused_ms=_LOOPBACK_REFUSED_MS, inbound_connect_ms=_LOOPBACK_INBOUND_CONNECT_MS,
    source=_LOOPBACK_SOURCE)

#: The platforms by name (``SimMesh(platform="loopback")``).
PLATFORMS: dict[str, Platform] = {p.name: p for p in (CLUSTER, LOOPBACK)}


def platform_named(platform: Platform | str) -> Platform:
    """``platform`` itself, or the platform of that name; ValueError naming the known ones."""
    if isinstance(platform, Platform):
        return platform
    if platform not in PLATFORMS:
        raise ValueError(f"unknown platform {platform!r}; known: {', '.join(PLATFORMS)}")
    return PLATFORMS[platform]


#: Envoy's retry back-off: base interval 25 ms, full jitter, doubling per retry (documented:
#: ``x-envoy-retry-on`` / router retry policy defaults). Istio's default route retries twice.
RETRY_BASE_INTERVAL_MS = 25.0
RETRY_ATTEMPTS = 2

# ---------------------------------------------------------------------------------------------
# Services
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceProfile:
    """How one service executes requests.

    Attributes:
        cores: CPU capacity in cores: the Kubernetes CPU limit (``cpu_limit_m / 1000``) where
            the manifest sets one (documented); 1 core for the databases, which have none.
            Concurrent requests share it as a processor-sharing server, each getting at most
            one core (a request runs on one thread).
        workers: requests the service processes at once; further ones queue FIFO. Tomcat's
            default ``maxThreads`` 200 for the Java services (documented Spring Boot default);
            effectively unlimited for Go (a goroutine per request), Node.js (one event loop
            interleaving every accepted request) and the databases (a thread or an event per
            connection).
        work_sigma: dispersion (lognormal sigma) of the CPU work of one operation.
    """

    cores: float
    workers: int
    work_sigma: float = 0.5


UNBOUNDED_WORKERS = 1_000_000

#: By service name. Cores follow ``envs.sockshop.SERVICES`` CPU limits.
SERVICE_PROFILES: dict[str, ServiceProfile] = {
    "carts": ServiceProfile(cores=0.3, workers=200),
    "carts-db": ServiceProfile(cores=1.0, workers=UNBOUNDED_WORKERS),
    "catalogue": ServiceProfile(cores=0.2, workers=UNBOUNDED_WORKERS),
    "catalogue-db": ServiceProfile(cores=1.0, workers=UNBOUNDED_WORKERS),
    "front-end": ServiceProfile(cores=0.3, workers=UNBOUNDED_WORKERS),
    "orders": ServiceProfile(cores=0.5, workers=200),
    "orders-db": ServiceProfile(cores=1.0, workers=UNBOUNDED_WORKERS),
    "payment": ServiceProfile(cores=0.2, workers=UNBOUNDED_WORKERS),
    "queue-master": ServiceProfile(cores=0.3, workers=200),
    "rabbitmq": ServiceProfile(cores=1.0, workers=UNBOUNDED_WORKERS),
    # redis executes commands on one thread: one core at most, whatever the node has.
    "session-db": ServiceProfile(cores=1.0, workers=UNBOUNDED_WORKERS),
    "shipping": ServiceProfile(cores=0.3, workers=200),
    "user": ServiceProfile(cores=0.3, workers=UNBOUNDED_WORKERS),
    "user-db": ServiceProfile(cores=1.0, workers=UNBOUNDED_WORKERS),
}

# ---------------------------------------------------------------------------------------------
# CPU work per operation (ms of one core). Keys are ``(service, operation)`` exactly as in
# ``envs.sockshop.ROUTES``.
# ---------------------------------------------------------------------------------------------

#: Work the callee does for one operation before it answers (or before its first downstream
#: call). Fitted to the notebook's table; orders of magnitude from the runtimes: a Go handler with a
#: Mongo/MySQL query ~1-3 ms, a Spring Boot handler ~3-8 ms (Java 8, -Xmx128m, GC), a
#: MongoDB/MySQL point query ~0.3-1 ms, a redis command ~0.1 ms.
OPERATION_WORK_MS: dict[tuple[str, str], float] = {
    ("session-db", "session read/write"): 0.15,
    ("catalogue", "GET /catalogue"): 3.0,
    ("catalogue", "GET /catalogue/{item}"): 1.5,
    ("catalogue-db", "SELECT socks"): 1.0,
    ("catalogue-db", "SELECT sock"): 0.4,
    ("user", "GET /login"): 2.0,
    ("user", "GET /customers/{customer}"): 1.0,
    ("user", "GET /customers/{customer}/addresses"): 1.0,
    ("user", "GET /customers/{customer}/cards"): 1.0,
    ("user", "GET /addresses/{id}"): 1.0,
    ("user", "GET /cards/{id}"): 1.0,
    ("user-db", "find user"): 0.4,
    ("user-db", "find customer"): 0.4,
    ("user-db", "find addresses"): 0.4,
    ("user-db", "find cards"): 0.4,
    ("user-db", "find address"): 0.3,
    ("user-db", "find card"): 0.3,
    ("carts", "GET /carts/{customer}/merge"): 4.0,
    ("carts", "DELETE /carts/{customer}"): 4.0,
    ("carts", "POST /carts/{customer}/items"): 5.0,
    ("carts", "GET /carts/{customer}/items"): 3.0,
    ("carts-db", "merge carts"): 0.6,
    ("carts-db", "delete cart"): 0.6,
    ("carts-db", "upsert item"): 0.6,
    ("carts-db", "find items"): 0.5,
    ("orders", "POST /orders"): 10.0,
    ("orders-db", "save order"): 0.8,
    ("payment", "POST /paymentAuth"): 0.5,
    ("shipping", "POST /shipping"): 3.0,
    ("rabbitmq", "publish shipment"): 0.3,
}

#: Work a service does after each downstream step (handling the reply) where it is not
#: negligible: carts maps every MongoDB reply to entities with Spring Data (estimate).
OPERATION_CONT_MS: dict[tuple[str, str], float] = {
    ("carts", "POST /carts/{customer}/items"): 1.0,
}

#: The front-end (Node.js 4, one event loop, 300 m CPU limit): CPU work per route, split into
#: the chunk that handles the incoming request (for static pages: serving the file) and the
#: chunk that handles each backend reply (JSON parse, session save, building the response).
#: Fitted: the notebook's static pages take ~230 ms at 50 users, the API routes 400-830 ms, and the
#: whole loop runs ~12 times per second, which makes the front-end the bottleneck: one loop
#: needs ~24.4 ms of CPU, so 12 loops/s use ~98 % of its 0.3 core.
FRONTEND_WORK_MS: dict[str, tuple[float, float]] = {
    "GET /": (1.6, 0.0),
    "GET /category.html": (1.6, 0.0),
    "GET /detail.html": (1.5, 0.0),
    "GET /basket.html": (1.7, 0.0),
    "GET /catalogue": (0.6, 1.1),
    "GET /login": (0.6, 1.2),
    "DELETE /cart": (0.6, 1.0),
    "POST /cart": (0.6, 1.2),
    "GET /cart": (0.6, 1.0),
    "POST /orders": (0.6, 0.9),
}

# ---------------------------------------------------------------------------------------------
# Clients of the TCP destinations (DB drivers) — how they use connections.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriverProfile:
    """How a service's driver connects to a TCP destination.

    Attributes:
        max_connections: the driver's own pool size (an operation waits for a pooled connection
            when all are busy and the pool is full).
        multiplexed: one connection carries every concurrent operation (pipelining); the pool
            then holds a single connection.
    """

    max_connections: int
    multiplexed: bool = False


#: ``(caller, destination)`` → driver. Sources (documented defaults of the drivers in the
#: images): MongoDB Java driver 3.x ``maxPoolSize`` 100 (carts, orders); Go mgo pool limit
#: 4096 (user); Go ``database/sql`` unlimited open connections (catalogue); node-redis
#: (connect-redis, front-end) and Spring AMQP's ``CachingConnectionFactory`` (shipping) keep
#: one connection and multiplex on it.
DRIVERS: dict[tuple[str, str], DriverProfile] = {
    ("carts", "carts-db"): DriverProfile(100),
    ("orders", "orders-db"): DriverProfile(100),
    ("user", "user-db"): DriverProfile(4096),
    ("catalogue", "catalogue-db"): DriverProfile(1_000_000),
    ("front-end", "session-db"): DriverProfile(1, multiplexed=True),
    ("shipping", "rabbitmq"): DriverProfile(1, multiplexed=True),
}

# ---------------------------------------------------------------------------------------------
# The load generator and the application's quirks
# ---------------------------------------------------------------------------------------------

#: Time a Locust user spends between one response and its next request (parsing the reply,
#: picking an item; no think time in the reference load test). Estimate for Locust's
#: Python client on a gevent loop.
CLIENT_GAP_MS = 1.0

#: Extra reads of the shared cart in carts' ``addToCart`` when the item is already in the cart.
#: From carts' source (``ItemsController.addToCart`` and ``FoundItem``): ``hasItem()`` reads the
#: cart, its debug log line reads it again (string concatenation is evaluated eagerly), then the
#: "found" branch calls ``foundItem.get()`` twice
#: (``new Item(foundItem.get(), foundItem.get().quantity() + 1)``) and ``updateItem`` reads it
#: once more through ``get(customerId, itemId)``; each read re-queries MongoDB. If a
#: concurrent ``DELETE /cart`` empties the cart between the first read and a later one,
#: ``FoundItem.get()`` throws ``IllegalArgumentException("Cannot find item in cart")`` → 500,
#: which the front-end turns into a failed POST /cart. This is the simulator's (only) cause of
#: POST /cart failures on a healthy mesh.
CART_FOUND_REREADS = 4

# ---------------------------------------------------------------------------------------------
# Front-end crashes
# ---------------------------------------------------------------------------------------------

#: Calls whose failed reply crashes the front-end's Node.js process, from front-end 0.3.12's
#: source: the reply body goes to ``JSON.parse`` (and its fields are dereferenced) inside a
#: ``request`` callback with no try/catch, so the exception is uncaught and Node exits.
#: ``"sidecar_503"``: only the sidecar's plain-text 503 (UO/UF) breaks ``JSON.parse``; the
#: services' own error replies are JSON. ``"any_failure"``: ``GET /customers/{id}`` then reads
#: ``jsonBody._links.customer.href``, which a JSON error body lacks, so any failure crashes.
#: (``POST /cart``'s catalogue lookup: ``callback(error, JSON.parse(body))``; ``POST /orders``:
#: the customer, address and card lookups.) The carts and orders calls use ``json: true`` and
#: survive any body; ``GET /catalogue`` forwards the body without parsing it.
FRONTEND_CRASH_ON: dict[tuple[str, str], str] = {
    ("catalogue", "GET /catalogue/{item}"): "sidecar_503",
    ("user", "GET /customers/{customer}"): "any_failure",
    ("user", "GET /customers/{customer}/addresses"): "sidecar_503",
    ("user", "GET /customers/{customer}/cards"): "sidecar_503",
}
#: Time from a crash until the restarted front-end serves again, when kubelet restarts it at
#: once: container start plus ``node server.js`` loading Express and connecting to redis
#: (estimate, 2 s).
FRONTEND_RESTART_MS = 2_000.0
#: kubelet's CrashLoopBackOff (documented): the first restart is immediate, later ones wait
#: 10 s, 20 s, 40 s, ... up to 5 min. The simulator starts every run with a clean restart
#: history.
CRASH_BACKOFF_BASE_MS = 10_000.0
CRASH_BACKOFF_CAP_MS = 300_000.0
