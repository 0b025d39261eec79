"""SockShop's per-service figures: what each service's CPU, workers and operations cost, how
its database drivers use connections, and how the front-end crashes and restarts.

Plain data that both the simulator (``envs.backends.sim``: compiled in ``graph.py``, passed to
the core by ``mesh.py``) and the ``local`` backend's services host
(``envs.backends.local.shop``) read, so the two run the same application. What one hop through
the mesh costs (sidecars, connects, retries) is not here: it depends on where the mesh runs,
see ``envs.backends.sim.profile``.

Every number says where it came from. Four kinds of source:

* **measured** — the original notebook's Locust table (50 users, 1 000 requests, the original
  system on GKE; copied in ``experiments/calibrate_sim.py``);
* **documented** — the Kubernetes manifests and the services' sources and drivers' defaults
  (https://github.com/microservices-demo/microservices-demo,
  ``deploy/kubernetes/complete-demo.yaml``; the services' repositories under
  https://github.com/microservices-demo), and Kubernetes' documentation
  (https://kubernetes.io/docs);
* **fitted** — chosen so that the simulator reproduces the notebook's table
  (``experiments/calibrate_sim.py`` checks it); these are the front-end's and the services'
  CPU demand per operation, whose split between services the notebook's table cannot pin down.
* **estimated** — reasoned from the runtimes where nothing measures it (each says so).

Units: durations in milliseconds, CPU work in *milliseconds of one full core* (a service with a
300 m CPU limit needs ``work / 0.3`` ms of wall time when it runs alone), capacities in cores.
"""

from __future__ import annotations

from dataclasses import dataclass

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
# The application's quirks
# ---------------------------------------------------------------------------------------------

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
#: kubelet's CrashLoopBackOff (documented,
#: https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#container-restarts): the
#: first restart is immediate, later ones wait
#: 10 s, 20 s, 40 s, ... up to 5 min. The simulator starts every run with a clean restart
#: history.
CRASH_BACKOFF_BASE_MS = 10_000.0
CRASH_BACKOFF_CAP_MS = 300_000.0
