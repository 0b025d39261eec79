"""The simulator kernel's data layout: event kinds, status flags, the column indices of its flat
job / connection / cluster / service arrays, counters, result codes and the mirrored graph codes.

Plain integer constants that Numba folds into :func:`envs.backends.sim.core.simulate` at compile
time; ``envs.backends.sim.mesh`` reads the result columns by these names.
"""

from __future__ import annotations

# ----- event kinds -----------------------------------------------------------------------------
EV_USER_NEXT = 1      # a: user — the user sends its next request
EV_START = 2          # a: job — one attempt through the outbound cluster
EV_CONNECT = 3        # a: conn, b: 1 ok / 0 timed out / 2 refused — connection resolved
EV_ARRIVE = 4         # a: job — request reaches the callee's sidecar
EV_CPU = 5            # a: service — its next CPU completion (from ``svc_next``)
EV_AFTER_CPU = 6      # a: job — a CPU chunk is done
EV_FINISH = 7         # a: job — the callee answers
EV_RESPONSE = 8       # a: job, b: 1 local reply (not retried) — the answer reaches the caller
EV_REPORT = 9         # a: parent job, b: node << 10 | status — a child call's outcome
EV_TIMEOUT = 10       # a: job, b: stamp — the caller's wait for this call expires
EV_HATCH_DONE = 11    # all users hatched: Locust resets its statistics
EV_OPEN_ARRIVAL = 12  # open loop: a new user arrives
EV_CONN_READY = 13    # a: conn — a connection is free for the next request
EV_FAIL = 14          # a: job, b: flag — an attempt failed locally (UO / UF)
EV_BEGIN = 15         # a: job — a worker picks the job up

#: ``b`` of an EV_CONNECT whose connection the (down) callee refused.
CONNECT_REFUSED = 2

FLAG_NONE = 0
FLAG_UO = 1       # overflow of a circuit-breaker limit (local 503, never retried)
FLAG_UF = 2       # connect failure: the connection timed out (retried)
FLAG_REFUSED = 3  # the destination is down and refused the connection (a reset; retried)
FLAG_RESET = 4    # the destination reset the request in flight (down, restarting; retried)

# ----- job columns (int64 matrix ji; floats in jf) -------------------------------------------
J_NODE = 0
J_PARENT = 1
J_USER = 2
J_STATUS = 3
J_FAILED = 4
J_STEP = 5
J_PENDING = 6
J_ATTEMPT = 7
J_HOLD = 8        # holds one unit of the cluster's retry budget
J_CONN = 9        # the outbound connection it uses, -1 none
J_NEXT = 10       # next job in whatever FIFO it waits in
J_STAMP = 11
J_REPORTED = 12
J_INB = 13        # holds an inbound connection at the callee
J_FLAG = 14
J_EXTRA = 15      # carts' addToCart: re-read phase
J_BADBODY = 16    # front-end GET /catalogue answered 200 with a non-catalogue body
J_PHASE = 17      # 1 initial CPU, 2 waiting for a step, 3 continuation CPU
J_ALIVE = 18
J_COUNTED = 19    # the current attempt's end is already counted (caller's timeout, inbound UO)
NJI = 20
F_ISSUE = 0
F_ATTEMPT = 1     # when the current attempt started (EV_START), ms
NJF = 2

# ----- cluster columns ---------------------------------------------------------------------------
C_NCONN = 0
C_NCONNECTING = 1
C_NPEND = 2
C_PHEAD = 3
C_PTAIL = 4
C_IDLE = 5
C_NACTIVE = 6
C_NRETRY = 7
C_MUX = 8          # multiplexed TCP client: 0 no connection, 1 connecting, 2 up
NCI = 9
CF_MUXLAST = 0
CF_MUXBORN = 1
NCF = 2

# ----- connection columns ------------------------------------------------------------------------
K_CLUSTER = 0
K_SERVED = 1
K_NEXT = 2
KF_LAST = 0
KF_BORN = 1

# ----- service columns ---------------------------------------------------------------------------
S_BUSY = 0
S_WHEAD = 1
S_WTAIL = 2
S_NCPU = 3
S_INCONN = 4
S_INACTIVE = 5
S_INPEND = 6
S_INHEAD = 7
S_INTAIL = 8
NSI = 9
SF_V = 0
SF_TLAST = 1

# ----- per-service statistics --------------------------------------------------------------------
ST_REQ = 0
ST_FAIL = 1
ST_UO = 2
ST_UF = 3
ST_RETRY = 4
ST_RETRY_OVF = 5
ST_CONN_OPEN = 6
ST_CONN_FAIL = 7
ST_OPS = 8
ST_PEAK_INBOUND = 9   # most requests at once in the callee sidecar's inbound (active + pending)
# the causes (issue 12). An attempt is one try of a call through the caller's outbound cluster
# (EV_START to its end); every cause below is counted together with one ST_ATTEMPTS at the same
# event, so their sum never exceeds the attempts over any window.
ST_ATTEMPTS = 10      # attempts that ended: failed locally or answered (late answers included)
ST_UT = 11            # Envoy's UT (a route's timeout): 0, no route sets one (orders' 5 s wait is
#                       the application's own, which the sidecars do not see)
ST_RESET = 12         # attempts refused (connection refused) or reset in flight by the callee
ST_REFUSED = 13       # of ST_RESET: failed because the down callee refused their connection
ST_CRASH_RESET = 14   # of ST_RESET: front-end requests lost when its process crashed
ST_URX = 15           # requests failed (UF / reset) with every retry attempt used
# connections held (issue 13: Envoy's per-worker slack): the most connections one calling
# sidecar's outbound pool to this destination held at once (open, idle or still connecting), and
# the most inbound connections this callee's sidecar held to its application at once
ST_PEAK_CONN = 16
ST_PEAK_INCONN = 17
NST = 18

# ----- extra counters ----------------------------------------------------------------------------
X_TASK_ERRORS = 0
X_CART_RACE = 1
X_DECLINES = 2
X_TIMEOUTS = 3
X_EVENTS = 4
X_SIM_END_MS = 5
X_CRASHES = 6
X_DOWN_MS = 7
X_ABANDONED = 8   # open loop: requests not sent because their session's catalogue failed
NX = 9

#: ``J_PHASE`` of a front-end request whose Node.js process crashed: its client got a reset;
#: the job only waits for its outstanding calls' replies before it is freed.
PHASE_ORPHAN = 9
#: ``J_ALIVE`` of such a job once its client has been answered.
ALIVE_CLIENT_DONE = 2
#: ``node_crash``: the front-end crashes when this call answers a sidecar 503 / any failure.
CRASH_ON_503 = 1
CRASH_ON_FAILURE = 2

#: Result codes.
OK = 0
ERR_STALLED = 1     # no event left before the requests completed
ERR_CAPACITY = 2    # a fixed-size pool ran out: re-run with larger capacities

_B_MASK = (1 << 24) - 1

# ----- kinds / on_error codes (mirror graph.py) --------------------------------------------------
KIND_CART_DELETE = 1
KIND_CART_ADD = 2
KIND_CART_READ = 3
KIND_PAYMENT = 4
ON_PROPAGATE = 0
ON_AS_500 = 1
ON_AS_401 = 2
ON_IGNORE = 3
ON_BODY_AS_200 = 4


#: Size of the quantile tables that turn one random integer into a lognormal draw.
TABLE_SIZE = 4096
_LCG_MUL = 6364136223846793005
_LCG_ADD = 1442695040888963407
