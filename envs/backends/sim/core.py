"""The simulator's event-driven core: one Numba-jitted function over flat NumPy arrays.

Everything here is integers, floats and arrays so that ``@njit(cache=True)`` compiles it; the
Python side (``envs.backends.sim.mesh``) prepares the arrays and turns the result into a
``LoadReport``. Times are milliseconds of simulated time.

Model (the why of each rule is in ``envs/backends/sim/README.md`` and Istio's DestinationRule
reference, https://istio.io/latest/docs/reference/config/networking/destination-rule/):

* A *job* is one call being served: a front-end route (its caller is the ingress gateway) or a
  call a service makes. It leaves through the caller sidecar's outbound *cluster* (per calling
  sidecar and destination), which has Envoy's connection pool: idle connections (LIFO),
  connections being established, a FIFO pending queue, counters of active requests and of
  retries in progress. It then passes the callee's inbound cluster (HTTP only), waits for a
  worker, runs its CPU work on the callee's processor-sharing CPU, runs its downstream steps
  (calls of a step in parallel, steps in order), and answers.
* Events live in a binary heap ordered by time (handlers put new ones in an outbox that the
  loop pushes); work that happens "now" goes on a LIFO stack of immediate events, or — for the
  common chains (a response frees its connection, a CPU chunk ends and the next step starts, a
  request arrives and a worker takes it) — the handler sets ``kind`` and falls through to the
  next handler, which is cheaper still. Each service's next CPU completion lives in
  ``svc_next`` rather than in the heap (processor sharing reschedules it on every change), and
  the 5 s waits of orders, all of the same length, in a FIFO ring.
* Each mechanism (heap push / pop, processor-sharing CPU, opening a connection, FIFO queues,
  job slots, replies) is one ``_helper`` inlined into ``simulate`` at the Numba IR level;
  only the three hottest handlers (EV_RESPONSE, EV_ARRIVE, EV_FINISH) keep theirs written out.
* Speed notes: an inlined helper that takes arrays still gets reference counting around its
  array arguments where LLVM cannot prune it — when the helper branches. Helpers on hot paths
  are therefore branch-free (the caller branches) or branch only where it is rare; their
  fast-math arithmetic is kept in the original order so that results stay bit-for-bit the same.
  Pools have fixed capacities (``ERR_CAPACITY`` asks the caller to re-run, same seed, with
  larger ones), and random draws are a 64-bit LCG indexing lognormal quantile tables.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# ----- event kinds -----------------------------------------------------------------------------
EV_USER_NEXT = 1      # a: user — the user sends its next request
EV_START = 2          # a: job — one attempt through the outbound cluster
EV_CONNECT = 3        # a: conn, b: 1 ok / 0 failed — connection establishment resolved
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

FLAG_NONE = 0
FLAG_UO = 1
FLAG_UF = 2

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
NJI = 19
F_ISSUE = 0
NJF = 1

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
NST = 10

# ----- extra counters ----------------------------------------------------------------------------
X_TASK_ERRORS = 0
X_CART_RACE = 1
X_DECLINES = 2
X_TIMEOUTS = 3
X_EVENTS = 4
X_SIM_END_MS = 5
X_CRASHES = 6
X_DOWN_MS = 7
NX = 8

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


@njit(cache=True, inline="always")
def _code(kind, a, b):
    return (kind << 56) | (a << 24) | (b & _B_MASK)


@njit(cache=True, inline="always")
def _fault_down(f_svc, f_kind, f_start, f_end, s, t):
    for i in range(f_svc.shape[0]):
        if f_svc[i] == s and f_kind[i] == 0 and f_start[i] <= t < f_end[i]:
            return True
    return False


@njit(cache=True, inline="always")
def _fault_broke(f_svc, f_kind, f_start, s, born, t):
    """A connection born at ``born`` to s is dead at t if s went down in between."""
    for i in range(f_svc.shape[0]):
        if f_svc[i] == s and f_kind[i] == 0 and born < f_start[i] <= t:
            return True
    return False


@njit(cache=True, inline="always")
def _spike(f_svc, f_kind, f_start, f_end, f_factor, s, t):
    f = 1.0
    for i in range(f_svc.shape[0]):
        if f_svc[i] == s and f_kind[i] == 1 and f_start[i] <= t < f_end[i]:
            f *= f_factor[i]
    return f


#: Size of the quantile tables that turn one random integer into a lognormal draw.
TABLE_SIZE = 4096
_LCG_MUL = 6364136223846793005
_LCG_ADD = 1442695040888963407


@njit(cache=True, inline="always")
def _rand31(rs):
    """One step of a 64-bit LCG (wrapping int64 arithmetic): (new state, 31 random bits)."""
    rs = rs * _LCG_MUL + _LCG_ADD
    return rs, (rs >> 33) & 0x7FFFFFFF


@njit(cache=True, inline="always")
def _draw(rs, median, table):
    """A lognormal draw from a quantile table: (new rng state, ``median * table[random]``)."""
    rs, r31 = _rand31(rs)
    return rs, median * table[r31 & (TABLE_SIZE - 1)]


# ----- mechanisms used from several handlers ---------------------------------------------------
# Each is inlined into ``simulate`` at the Numba IR level (``inline="always"``): no call. An
# array argument costs an incref/decref pair that LLVM prunes only in branch-free code, so the
# helpers used on every event (``_release_retry``, ``_use_connection``, ``_fifo_pop``) do not
# branch, and the three hottest handlers (EV_RESPONSE, EV_ARRIVE, EV_FINISH) keep their code
# written out (with helpers there the kernel measured 2-4 % slower). Scalars of the loop's state
# (rng state, counters, the earliest CPU completion) go in as arguments and come back as return
# values.


@njit(cache=True, inline="always")
def _push_event(ob_t, ob_c, ob_n, t, code):
    """Schedule the event ``code`` at time ``t`` ms (into the outbox); returns the new ``ob_n``."""
    ob_t[ob_n] = t
    ob_c[ob_n] = code
    return ob_n + 1


@njit(cache=True, inline="always")
def _push_now(st, sn, code):
    """Put the event ``code`` on the stack of immediate events; returns the new ``sn``."""
    st[sn] = code
    return sn + 1


@njit(cache=True, inline="always")
def _release(free, n_free, i):
    """Return slot i to the free list ``free[:n_free]``; returns the new ``n_free``."""
    free[n_free] = i
    return n_free + 1


@njit(cache=True, inline="always")
def _heap_push(keys, vals, row, n, key, val):
    """Insert (key, val) into the binary min-heap ``keys[row, :n]`` / ``vals[row, :n]``."""
    i = n
    while i > 0:
        par = (i - 1) >> 1
        if keys[row, par] <= key:
            break
        keys[row, i] = keys[row, par]
        vals[row, i] = vals[row, par]
        i = par
    keys[row, i] = key
    vals[row, i] = val


@njit(cache=True, inline="always")
def _heap_refill_root(keys, vals, row, n):
    """After the root of a heap of ``n + 1`` entries was taken: move entry ``n`` (the last)
    into the root's place and sift it down, leaving a heap of ``n`` entries."""
    key = keys[row, n]
    val = vals[row, n]
    i = 0
    while True:
        left = 2 * i + 1
        if left >= n:
            break
        m = left
        if left + 1 < n and keys[row, left + 1] < keys[row, left]:
            m = left + 1
        if keys[row, m] >= key:
            break
        keys[row, i] = keys[row, m]
        vals[row, i] = vals[row, m]
        i = m
    keys[row, i] = key
    vals[row, i] = val


@njit(cache=True, inline="always")
def _cpu_rate(cores, ncpu):
    """Processor sharing: the CPU share (cores) each of ``ncpu`` jobs gets, at most one core."""
    return min(1.0, cores / ncpu)


@njit(cache=True, inline="always")
def _earliest_cpu(svc_next, s, cpu_t, cpu_s):
    """(time, service) of the earliest CPU completion over all services, after ``svc_next[s]``
    changed; it was (cpu_t, cpu_s). Rescans only when s was the earliest and got later."""
    if svc_next[s] < cpu_t:
        return svc_next[s], s
    if s == cpu_s:
        cpu_t = np.inf
        for s2 in range(svc_next.shape[0]):
            if svc_next[s2] < cpu_t:
                cpu_t = svc_next[s2]
                cpu_s = s2
    return cpu_t, cpu_s


@njit(cache=True, inline="always")
def _cpu_add(s, j, work_ms, now, si, sf, pk, pj, pn, svc_cores, svc_next, cpu_t, cpu_s):
    """Job j joins service s's processor-sharing CPU with ``work_ms`` of work: advance the
    service's virtual time, push j into its heap (keyed by virtual finish time), reschedule its
    next completion. Returns the new earliest CPU completion (cpu_t, cpu_s)."""
    ncpu = si[s, S_NCPU]
    if ncpu > 0:
        sf[s, SF_V] += (now - sf[s, SF_TLAST]) * _cpu_rate(svc_cores[s], ncpu)
    sf[s, SF_TLAST] = now
    _heap_push(pk, pj, s, pn[s], sf[s, SF_V] + work_ms, j)
    pn[s] += 1
    si[s, S_NCPU] = ncpu + 1
    svc_next[s] = now + (pk[s, 0] - sf[s, SF_V]) / _cpu_rate(svc_cores[s], ncpu + 1)
    return _earliest_cpu(svc_next, s, cpu_t, cpu_s)


@njit(cache=True, inline="always")
def _draw_work(rs, median_ms, tab_work, s, f_svc, f_kind, f_start, f_end, f_factor, now):
    """CPU work of one chunk on service s: (new rng state, ms), latency spikes included."""
    rs, r31 = _rand31(rs)
    work = median_ms * tab_work[s, r31 & (TABLE_SIZE - 1)]
    work *= _spike(f_svc, f_kind, f_start, f_end, f_factor, s, now)
    return rs, work


@njit(cache=True, inline="always")
def _new_job(ji, jf, jfree, n_jfree, node, parent, user, ok_status, now):
    """Take a free job slot for a call of ``node`` issued at ``now`` ms: (job, new n_jfree).
    Its stamp moves on, so that timeouts armed for the slot's previous job are stale."""
    j = jfree[n_jfree - 1]
    stamp = ji[j, J_STAMP] + 1
    for q in range(NJI):
        ji[j, q] = 0
    ji[j, J_STAMP] = stamp
    ji[j, J_NODE] = node
    ji[j, J_PARENT] = parent
    ji[j, J_USER] = user
    ji[j, J_STATUS] = ok_status
    ji[j, J_ATTEMPT] = 1
    ji[j, J_CONN] = -1
    ji[j, J_NEXT] = -1
    ji[j, J_ALIVE] = 1
    jf[j, F_ISSUE] = now
    return j, n_jfree - 1


@njit(cache=True, inline="always")
def _free_job(ji, jfree, n_jfree, j):
    """Return job j's slot to the free list (its stamp moves on); returns the new n_jfree."""
    ji[j, J_ALIVE] = 0
    ji[j, J_STAMP] += 1
    return _release(jfree, n_jfree, j)


@njit(cache=True, inline="always")
def _fail_job(ji, j, flag):
    """Job j's call fails with a 503 (``flag``: FLAG_UO, FLAG_UF or FLAG_NONE)."""
    ji[j, J_STATUS] = 503
    ji[j, J_FAILED] = 1
    ji[j, J_FLAG] = flag


@njit(cache=True, inline="always")
def _release_retry(ji, ci, j, c):
    """Job j gives back the unit of cluster c's retry budget it holds, if any."""
    # branch-free: a helper that takes arrays costs reference counting around its branches
    ci[c, C_NRETRY] -= ji[j, J_HOLD]
    ji[j, J_HOLD] = 0


@njit(cache=True, inline="always")
def _fifo_push(q, row, head, tail, ji, j):
    """Append job j to the FIFO of jobs linked through ``J_NEXT`` whose first and last job are
    ``q[row, head]`` and ``q[row, tail]`` (-1: empty)."""
    ji[j, J_NEXT] = -1
    if q[row, tail] >= 0:
        ji[q[row, tail], J_NEXT] = j
    else:
        q[row, head] = j
    q[row, tail] = j


@njit(cache=True, inline="always")
def _fifo_pop(q, row, head, tail, ji):
    """Remove and return the first job of a non-empty FIFO (see ``_fifo_push``)."""
    j = q[row, head]
    nxt = ji[j, J_NEXT]
    q[row, head] = nxt
    q[row, tail] |= nxt >> 63    # the queue is now empty (nxt -1): tail -1 too, branch-free
    return j


@njit(cache=True, inline="always")
def _fail_all_pending(ci, c, ji, st, sn):
    """Every request pending in cluster c fails now (UF, via EV_FAIL on the immediate stack);
    the queue is emptied. Returns the new stack size."""
    j = ci[c, C_PHEAD]
    while j >= 0:
        nxt = ji[j, J_NEXT]
        sn = _push_now(st, sn, _code(EV_FAIL, j, FLAG_UF))
        j = nxt
    ci[c, C_PHEAD] = -1
    ci[c, C_PTAIL] = -1
    ci[c, C_NPEND] = 0
    return sn


@njit(cache=True, inline="always")
def _reply(rs, median_ms, table, now, j, local, ob_t, ob_c, ob_n):
    """Job j's answer reaches its caller after one drawn proxy delay (EV_RESPONSE; ``local``:
    a reply the router does not retry). Returns (rng state, ob_n)."""
    rs, delay = _draw(rs, median_ms, table)
    return rs, _push_event(ob_t, ob_c, ob_n, now + delay, _code(EV_RESPONSE, j, local))


@njit(cache=True, inline="always")
def _use_connection(ci, c, ki, k, ji, j, http):
    """Job j's request goes out on connection k of cluster c (counted active when HTTP)."""
    ci[c, C_NACTIVE] += http
    ji[j, J_CONN] = k
    ki[k, K_SERVED] += 1


@njit(cache=True, inline="always")
def _open_connection(rs, c, d, now, ci, ki, kf, kfree, n_kfree, stats, recording,
                     f_svc, f_kind, f_start, f_end, refused_ms, connect_median_ms, tab_conn,
                     connect_timeout_ms, ob_t, ob_c, ob_n):
    """Cluster c starts a connection to service d: refused while d is down, else established
    after a drawn time or failed at ``connect_timeout_ms`` (EV_CONNECT).
    Returns (rng state, n_kfree, ob_n)."""
    k = kfree[n_kfree - 1]
    n_kfree -= 1
    ki[k, K_CLUSTER] = c
    ki[k, K_SERVED] = 0
    kf[k, KF_BORN] = now
    ci[c, C_NCONN] += 1
    ci[c, C_NCONNECTING] += 1
    if recording:
        stats[d, ST_CONN_OPEN] += 1
    if _fault_down(f_svc, f_kind, f_start, f_end, d, now):
        ob_n = _push_event(ob_t, ob_c, ob_n, now + refused_ms, _code(EV_CONNECT, k, 0))
    else:
        rs, tc = _draw(rs, connect_median_ms, tab_conn)
        if tc > connect_timeout_ms:
            ob_n = _push_event(ob_t, ob_c, ob_n, now + connect_timeout_ms,
                               _code(EV_CONNECT, k, 0))
        else:
            ob_n = _push_event(ob_t, ob_c, ob_n, now + tc, _code(EV_CONNECT, k, 1))
    return rs, n_kfree, ob_n


# fast-math flags that keep inf and NaN semantics (``svc_next`` uses inf for "idle")
@njit(cache=True, error_model="numpy",
      fastmath={"nsz", "arcp", "contract", "afn", "reassoc"})
def simulate(
    # call graph
    node_svc, node_cluster, node_kind, node_on_error, node_timeout_ms, node_ok_status,
    node_step_first, node_step_count, node_work_ms, node_cont_ms,
    step_call_first, step_call_count, step_calls,
    loop_root, loop_endpoint, detail_endpoint, item_price,
    # services
    svc_is_tcp, svc_cores, svc_workers, tab_work,
    in_max_conn, in_max_pending, in_max_req,
    # outbound clusters
    cl_dest, cl_max_conn, cl_max_pending, cl_max_req, cl_max_retries, cl_connect_timeout_ms,
    cl_max_rpc, cl_idle_timeout_ms, cl_driver_max, cl_mux,
    # faults: service, kind (0 down, 1 latency spike), window [start, end) ms, factor
    f_svc, f_kind, f_start, f_end, f_factor,
    # load
    open_loop, n_users, n_requests, hatch_interval_ms, loop_gap_ms, reset_after_hatch,
    # constants
    sidecar_median_ms, tab_one, two_mu, tab_two, connect_median_ms, tab_conn, refused_ms,
    inbound_connect_ms, retry_base_ms, retry_attempts, client_gap_ms, cart_rereads,
    payment_limit, shipping_cost, declined_status,
    # front-end crashes: enabled, its service index, the call nodes that crash it, the time a
    # restarted container needs to serve, kubelet's CrashLoopBackOff (base, cap)
    fe_crash, fe_svc, node_crash, fe_restart_ms, fe_backoff_base_ms, fe_backoff_cap_ms,
    seed, job_cap, user_cap, timer_cap,
):
    """Run one load; returns (status, rec_ep, rec_lat_ms, rec_fail, t_start_ms, t_end_ms,
    svc_stats, srec_svc, srec_lat_ms, n_srec, extra).

    ``rec_*`` hold exactly ``n_requests`` Locust records (endpoint index, latency, failed);
    ``svc_stats`` the per-destination counters (``ST_*`` columns); ``srec_*`` one record per
    HTTP call completed at a caller (destination, latency as the caller's sidecar saw it).
    """
    rs = seed * 2654435761 + 12345
    for _ in range(4):
        rs, r31 = _rand31(rs)
    n_svc = svc_is_tcp.shape[0]
    n_cl = cl_dest.shape[0]
    n_items = item_price.shape[0]

    cap = job_cap
    ji = np.zeros((cap, NJI), np.int64)
    jf = np.zeros((cap, NJF), np.float64)
    jfree = np.empty(cap, np.int64)
    for i in range(cap):
        jfree[i] = cap - 1 - i
    n_jfree = cap

    kcap = job_cap
    ki = np.zeros((kcap, 3), np.int64)
    kf = np.zeros((kcap, 2), np.float64)
    kfree = np.empty(kcap, np.int64)
    for i in range(kcap):
        kfree[i] = kcap - 1 - i
    n_kfree = kcap

    ci = np.zeros((n_cl, NCI), np.int64)
    cf = np.zeros((n_cl, NCF), np.float64)
    for c in range(n_cl):
        ci[c, C_PHEAD] = -1
        ci[c, C_PTAIL] = -1
        ci[c, C_IDLE] = -1
    si = np.zeros((n_svc, NSI), np.int64)
    sf = np.zeros((n_svc, 2), np.float64)
    for s in range(n_svc):
        si[s, S_WHEAD] = -1
        si[s, S_WTAIL] = -1
        si[s, S_INHEAD] = -1
        si[s, S_INTAIL] = -1
    pk = np.empty((n_svc, job_cap), np.float64)
    pj = np.empty((n_svc, job_cap), np.int64)
    pn = np.zeros(n_svc, np.int64)
    svc_next = np.full(n_svc, np.inf)
    # the earliest CPU completion over all services, kept up to date incrementally
    cpu_t = np.inf
    cpu_s = 0
    to_t = np.empty(timer_cap, np.float64)
    to_c = np.empty(timer_cap, np.int64)
    to_h = 0
    to_n = 0

    ucap = n_users if not open_loop else user_cap
    u_pos = np.zeros(ucap, np.int64)
    u_item = np.zeros(ucap, np.int64)
    u_amount = np.zeros(ucap, np.float64)
    ufree = np.empty(ucap, np.int64)
    for i in range(ucap):
        ufree[i] = ucap - 1 - i
    n_ufree = ucap
    cart = np.zeros(n_items, np.int64)

    stats = np.zeros((n_svc, NST), np.int64)
    xc = np.zeros(NX, np.float64)
    rec_ep = np.zeros(n_requests, np.int64)
    rec_lat = np.zeros(n_requests, np.float64)
    rec_fail = np.zeros(n_requests, np.int64)
    n_rec = 0
    srec_cap = 40 * (n_requests + ucap)
    srec_svc = np.empty(srec_cap, np.int64)
    srec_lat = np.empty(srec_cap, np.float64)
    n_srec = 0

    # every live job, connection and user has at most a few events outstanding
    ev_cap = 4 * (job_cap + kcap + ucap) + 64
    # the event heap: one row, so that it shares ``_heap_push`` with the per-service CPU heaps
    ht = np.empty((1, ev_cap), np.float64)
    hc = np.empty((1, ev_cap), np.int64)
    hn = 0
    st = np.empty(ev_cap, np.int64)
    sn = 0
    # events scheduled by a handler wait in this outbox until the loop pushes them on the heap
    ob_t = np.empty(ev_cap, np.float64)
    ob_c = np.empty(ev_cap, np.int64)
    ob_n = 0
    overflow = False
    report_a = -1    # a child's outcome waiting to reach its parent (EV_RESPONSE -> EV_REPORT)
    report_b = 0
    fe_down_until = -1.0
    fe_crashes = 0
    orph = np.empty(job_cap, np.int64)

    sc_mu = sidecar_median_ms
    recording = not reset_after_hatch or open_loop
    t_start = 0.0
    now = 0.0
    status = OK

    if open_loop:
        ob_n = _push_event(ob_t, ob_c, ob_n, 0.0, _code(EV_OPEN_ARRIVAL, 0, 0))
    else:
        for u in range(n_users):
            ufree_i = ufree[n_ufree - 1]
            n_ufree -= 1
            u_pos[ufree_i] = 0
            ob_n = _push_event(ob_t, ob_c, ob_n, u * hatch_interval_ms,
                               _code(EV_USER_NEXT, ufree_i, 0))
        if reset_after_hatch:
            ob_n = _push_event(ob_t, ob_c, ob_n, (n_users - 1) * hatch_interval_ms,
                               _code(EV_HATCH_DONE, 0, 0))

    while True:
        for q in range(ob_n):
            _heap_push(ht, hc, 0, hn, ob_t[q], ob_c[q])
            hn += 1
        ob_n = 0
        if sn > 0:
            sn -= 1
            code = st[sn]
        else:
            # the earliest of: the event heap, a service's next CPU completion, a wait's end
            t_best = np.inf
            src = -1
            if hn > 0:
                t_best = ht[0, 0]
                src = 0
            if cpu_t < t_best:
                t_best = cpu_t
                src = 1 + cpu_s
            if to_h < to_n and to_t[to_h % timer_cap] < t_best:
                t_best = to_t[to_h % timer_cap]
                src = -2
            if src == -1:
                status = ERR_STALLED
                break
            if src == 0:
                now = ht[0, 0]
                code = hc[0, 0]
                hn -= 1
                if hn > 0:
                    _heap_refill_root(ht, hc, 0, hn)
            elif src == -2:
                now = to_t[to_h % timer_cap]
                code = to_c[to_h % timer_cap]
                to_h += 1
            else:
                now = t_best
                code = _code(EV_CPU, src - 1, 0)
        xc[X_EVENTS] += 1
        kind = code >> 56
        a = (code >> 24) & 0xFFFFFFFF
        b = code & _B_MASK

        # capacities are fixed for speed; the caller re-runs with larger ones on overflow
        if (overflow or n_jfree < 64 or n_kfree < 64 or hn + job_cap + 64 > ev_cap
                or sn + job_cap + 64 > ev_cap or n_srec + 64 > srec_cap
                or ob_n + job_cap + 64 > ev_cap):
            status = ERR_CAPACITY
            break

        # Handlers run in this order so that one can hand over to a later one by setting
        # ``kind`` (and ``a``, ``b``) instead of going through the immediate stack.
        if kind == EV_USER_NEXT:
            u = a
            pos = u_pos[u]
            j, n_jfree = _new_job(ji, jf, jfree, n_jfree, loop_root[pos], -1, u,
                                  node_ok_status[loop_root[pos]], now)
            kind = EV_START
            a = j

        if kind == EV_RESPONSE:
            j = a
            n = ji[j, J_NODE]
            c = node_cluster[n]
            d = node_svc[n]
            k = ji[j, J_CONN]
            ready_conn = -1
            if k >= 0:
                ji[j, J_CONN] = -1
                if not svc_is_tcp[d]:
                    ci[c, C_NACTIVE] -= 1
                rpc = cl_max_rpc[c]
                if (rpc > 0 and ki[k, K_SERVED] >= rpc) or _fault_down(
                        f_svc, f_kind, f_start, f_end, d, now):
                    # maxRequestsPerConnection reached (or the peer is gone): close it
                    kfree[n_kfree] = k
                    n_kfree += 1
                    ci[c, C_NCONN] -= 1
                    if (ci[c, C_NPEND] > ci[c, C_NCONNECTING]
                            and ci[c, C_NCONN] < cl_max_conn[c]
                            and ci[c, C_NCONN] < cl_driver_max[c]):
                        k2 = kfree[n_kfree - 1]
                        n_kfree -= 1
                        ki[k2, K_CLUSTER] = c
                        ki[k2, K_SERVED] = 0
                        kf[k2, KF_BORN] = now
                        ci[c, C_NCONN] += 1
                        ci[c, C_NCONNECTING] += 1
                        if recording:
                            stats[d, ST_CONN_OPEN] += 1
                        if _fault_down(f_svc, f_kind, f_start, f_end, d, now):
                            ob_t[ob_n] = now + refused_ms
                            ob_c[ob_n] = _code(EV_CONNECT, k2, 0)
                            ob_n += 1
                        else:
                            rs, r31 = _rand31(rs)
                            tc = connect_median_ms * tab_conn[r31 & (TABLE_SIZE - 1)]
                            if tc > cl_connect_timeout_ms[c]:
                                ob_t[ob_n] = now + cl_connect_timeout_ms[c]
                                ob_c[ob_n] = _code(EV_CONNECT, k2, 0)
                                ob_n += 1
                            else:
                                ob_t[ob_n] = now + tc
                                ob_c[ob_n] = _code(EV_CONNECT, k2, 1)
                                ob_n += 1
                else:
                    ready_conn = k
            if b == 0 and ji[j, J_FAILED] and ji[j, J_FLAG] == FLAG_UF and not svc_is_tcp[d]:
                # an upstream reset/503 that is not an overflow: the router may retry it
                st[sn] = _code(EV_FAIL, j, FLAG_UF)
                sn += 1
                if ready_conn >= 0:
                    st[sn] = _code(EV_CONN_READY, ready_conn, 0)
                    sn += 1
                continue
            if ji[j, J_HOLD]:
                ci[c, C_NRETRY] -= 1
                ji[j, J_HOLD] = 0
            lat = now - jf[j, F_ISSUE]
            if recording:
                stats[d, ST_REQ] += 1
                if ji[j, J_STATUS] >= 500:
                    stats[d, ST_FAIL] += 1
                if not svc_is_tcp[d]:
                    srec_svc[n_srec] = d
                    srec_lat[n_srec] = lat
                    n_srec += 1
            p = ji[j, J_PARENT]
            u = ji[j, J_USER]
            if p >= 0:
                if not ji[j, J_REPORTED]:
                    ji[j, J_REPORTED] = 1
                    # handed to EV_REPORT after EV_CONN_READY (see the end of this handler)
                    report_a = p
                    report_b = (n << 10) | ji[j, J_STATUS]
            else:
                # the Locust client gets the front-end's answer
                pos = u_pos[u]
                failed = ji[j, J_STATUS] >= 400
                if recording:
                    ep = loop_endpoint[pos]
                    if ep < 0:
                        ep = detail_endpoint[u_item[u]]
                    rec_ep[n_rec] = ep
                    rec_lat[n_rec] = lat
                    rec_fail[n_rec] = failed
                    n_rec += 1
                if pos == 0:
                    if failed or ji[j, J_BADBODY]:
                        # the task cannot parse the item list: it raises, Locust restarts it
                        if recording:
                            xc[X_TASK_ERRORS] += 1
                        u_pos[u] = 0
                    else:
                        rs, r31 = _rand31(rs)
                        u_item[u] = r31 % n_items
                        u_pos[u] = 1
                else:
                    u_pos[u] = (pos + 1) % loop_root.shape[0]
                if n_rec >= n_requests:
                    ji[j, J_ALIVE] = 0
                    break
                if open_loop and u_pos[u] == 0 and pos != 0:
                    ufree[n_ufree] = u
                    n_ufree += 1
                else:
                    ob_t[ob_n] = now + client_gap_ms
                    ob_c[ob_n] = _code(EV_USER_NEXT, u, 0)
                    ob_n += 1
            if ji[j, J_PHASE] == PHASE_ORPHAN and ji[j, J_PENDING] > 0:
                ji[j, J_ALIVE] = ALIVE_CLIENT_DONE
            else:
                ji[j, J_ALIVE] = 0
                ji[j, J_STAMP] += 1
                jfree[n_jfree] = j
                n_jfree += 1
            if ready_conn >= 0:
                kind = EV_CONN_READY
                a = ready_conn
            elif report_a >= 0:
                kind = EV_REPORT
                a = report_a
                b = report_b
                report_a = -1

        if kind == EV_CONN_READY:
            k = a
            c = ki[k, K_CLUSTER]
            d = cl_dest[c]
            used = False
            while ci[c, C_PHEAD] >= 0:
                j = _fifo_pop(ci, c, C_PHEAD, C_PTAIL, ji)
                ci[c, C_NPEND] -= 1
                if (not svc_is_tcp[d]) and ci[c, C_NACTIVE] >= cl_max_req[c]:
                    sn = _push_now(st, sn, _code(EV_FAIL, j, FLAG_UO))
                    continue
                _use_connection(ci, c, ki, k, ji, j, not svc_is_tcp[d])
                # the request crosses both sidecars (HTTP: and the callee's inbound connection)
                rs, delay = _draw(rs, two_mu, tab_two)
                if not svc_is_tcp[d]:
                    delay += inbound_connect_ms
                ob_n = _push_event(ob_t, ob_c, ob_n, now + delay, _code(EV_ARRIVE, j, 0))
                used = True
                break
            if not used:
                kf[k, KF_LAST] = now
                ki[k, K_NEXT] = ci[c, C_IDLE]
                ci[c, C_IDLE] = k
            if report_a >= 0:
                kind = EV_REPORT
                a = report_a
                b = report_b
                report_a = -1

        if kind == EV_CPU:
            s = a
            ncpu = si[s, S_NCPU]
            sf[s, SF_V] += (now - sf[s, SF_TLAST]) * _cpu_rate(svc_cores[s], ncpu)
            sf[s, SF_TLAST] = now
            first_done = -1
            # the heap's minimum is due now (pop it even if rounding left it a hair ahead)
            while pn[s] > 0 and (first_done < 0 or pk[s, 0] <= sf[s, SF_V] + 1e-9):
                j = pj[s, 0]
                pn[s] -= 1
                if pn[s] > 0:
                    _heap_refill_root(pk, pj, s, pn[s])
                ncpu -= 1
                if first_done < 0:
                    first_done = j
                else:
                    sn = _push_now(st, sn, _code(EV_AFTER_CPU, j, 0))
            si[s, S_NCPU] = ncpu
            if ncpu > 0:
                svc_next[s] = now + (pk[s, 0] - sf[s, SF_V]) / _cpu_rate(svc_cores[s], ncpu)
            else:
                svc_next[s] = np.inf
            cpu_t, cpu_s = _earliest_cpu(svc_next, s, cpu_t, cpu_s)
            if first_done >= 0:
                kind = EV_AFTER_CPU
                a = first_done

        if kind in (EV_REPORT, EV_AFTER_CPU, EV_FINISH, EV_BEGIN) and (
                ji[a, J_PHASE] == PHASE_ORPHAN):
            # the process this request lived in is gone: drop the event; free the job once its
            # client has been answered and its last outstanding call has replied
            if kind == EV_REPORT:
                ji[a, J_PENDING] -= 1
                if ji[a, J_PENDING] == 0 and ji[a, J_ALIVE] == ALIVE_CLIENT_DONE:
                    n_jfree = _free_job(ji, jfree, n_jfree, a)
            kind = 0

        if kind in (EV_AFTER_CPU, EV_REPORT):
            if kind == EV_AFTER_CPU:
                j = a
                if ji[j, J_PHASE] == 1:
                    ji[j, J_STEP] = 0
                elif ji[j, J_EXTRA] <= 0 or ji[j, J_FAILED]:
                    # (carts' addToCart re-reads the cart: the same step again)
                    ji[j, J_STEP] += 1
                ji[j, J_PHASE] = 2
                go_on = True
            else:
                # a child's outcome reaches its parent a
                j = a
                cn = b >> 10
                cst = b & 1023
                crash = False
                if fe_crash and node_crash[cn] > 0 and now >= fe_down_until:
                    crash = cst == 503 if node_crash[cn] == CRASH_ON_503 else cst >= 400
                if crash:
                    # JSON.parse of the sidecar's plain-text reply (or of an error body) throws in
                    # a callback: Node.js exits, kubelet restarts the container
                    fe_crashes += 1
                    restart = fe_restart_ms
                    if fe_crashes > 1:
                        restart += min(fe_backoff_cap_ms,
                                       fe_backoff_base_ms * 2.0 ** (fe_crashes - 2))
                    fe_down_until = now + restart
                    # counted over the whole run (hatching included): a crash while users hatch
                    # still keeps the front-end down in the measured window
                    xc[X_CRASHES] += 1
                    xc[X_DOWN_MS] += restart
                    # every request inside the process is lost: the gateway sees a reset (503,
                    # not retried); so are those queued in its sidecar for a connection
                    n_orph = 0
                    for r in range(ji.shape[0]):
                        if ji[r, J_ALIVE] == 1 and ji[r, J_PARENT] < 0 and ji[r, J_INB] == 1:
                            orph[n_orph] = r
                            n_orph += 1
                    w = si[fe_svc, S_INHEAD]
                    while w >= 0:
                        orph[n_orph] = w
                        n_orph += 1
                        w = ji[w, J_NEXT]
                    for q in range(n_orph):
                        r = orph[q]
                        ji[r, J_PHASE] = PHASE_ORPHAN
                        ji[r, J_INB] = 0
                        _fail_job(ji, r, FLAG_NONE)
                        rs, ob_n = _reply(rs, sc_mu, tab_one, now, r, 1, ob_t, ob_c, ob_n)
                    si[fe_svc, S_INHEAD] = -1
                    si[fe_svc, S_INTAIL] = -1
                    si[fe_svc, S_INPEND] = 0
                    si[fe_svc, S_INCONN] = 0
                    si[fe_svc, S_INACTIVE] = 0
                    si[fe_svc, S_BUSY] = 0
                    si[fe_svc, S_WHEAD] = -1
                    si[fe_svc, S_WTAIL] = -1
                    pn[fe_svc] = 0
                    si[fe_svc, S_NCPU] = 0
                    svc_next[fe_svc] = np.inf
                    cpu_t, cpu_s = _earliest_cpu(svc_next, fe_svc, cpu_t, cpu_s)
                    # this reply's parent is one of the lost requests
                    ji[j, J_PENDING] -= 1
                    go_on = False
                else:
                    u = ji[j, J_USER]
                    if (node_kind[cn] == KIND_PAYMENT and cst < 400
                            and u_amount[u] > payment_limit):
                        if recording:
                            xc[X_DECLINES] += 1
                        if not ji[j, J_FAILED]:
                            ji[j, J_FAILED] = 1
                            ji[j, J_STATUS] = declined_status
                    elif cst >= 400:
                        on = node_on_error[cn]
                        if on == ON_BODY_AS_200:
                            ji[j, J_BADBODY] = 1
                        elif on != ON_IGNORE and not ji[j, J_FAILED]:
                            ji[j, J_FAILED] = 1
                            if on == ON_AS_401:
                                ji[j, J_STATUS] = 401
                            elif on == ON_AS_500 or svc_is_tcp[node_svc[cn]] or cst == 504:
                                ji[j, J_STATUS] = 500
                            else:
                                ji[j, J_STATUS] = cst
                    ji[j, J_PENDING] -= 1
                    go_on = False
                    if ji[j, J_PENDING] == 0:
                        n = ji[j, J_NODE]
                        if node_cont_ms[n] > 0:
                            s = node_svc[n]
                            ji[j, J_PHASE] = 3
                            rs, work = _draw_work(rs, node_cont_ms[n], tab_work, s, f_svc,
                                                  f_kind, f_start, f_end, f_factor, now)
                            cpu_t, cpu_s = _cpu_add(s, j, work, now, si, sf, pk, pj, pn,
                                                    svc_cores, svc_next, cpu_t, cpu_s)
                        else:
                            if ji[j, J_EXTRA] <= 0 or ji[j, J_FAILED]:
                                # (carts' addToCart re-reads the cart: the same step again)
                                ji[j, J_STEP] += 1
                            go_on = True
            if go_on:
                n = ji[j, J_NODE]
                if ji[j, J_FAILED] or ji[j, J_STEP] >= node_step_count[n]:
                    kind = EV_FINISH
                    a = j
                else:
                    sidx = node_step_first[n] + ji[j, J_STEP]
                    first = step_call_first[sidx]
                    last = step_call_count[sidx] - 1
                    for q in range(last + 1):
                        cn = step_calls[first + q]
                        ch, n_jfree = _new_job(ji, jf, jfree, n_jfree, cn, j, ji[j, J_USER],
                                               node_ok_status[cn], now)
                        ji[j, J_PENDING] += 1
                        if q < last:
                            sn = _push_now(st, sn, _code(EV_START, ch, 0))
                        else:
                            # the last call of the step starts right away (no stack round trip)
                            kind = EV_START
                            a = ch
                        if node_timeout_ms[cn] > 0:
                            # every wait has the same length, so deadlines come in FIFO order
                            if to_n - to_h >= timer_cap:
                                overflow = True
                                break
                            to_t[to_n % timer_cap] = now + node_timeout_ms[cn]
                            to_c[to_n % timer_cap] = _code(EV_TIMEOUT, ch, ji[ch, J_STAMP])
                            to_n += 1
                        if n_jfree < 4:
                            overflow = True
                            break

        if kind == EV_FINISH:
            j = a
            n = ji[j, J_NODE]
            d = node_svc[n]
            u = ji[j, J_USER]
            nk = node_kind[n]
            if nk == KIND_CART_DELETE:
                for i in range(n_items):
                    cart[i] = 0
            elif nk == KIND_CART_READ:
                amount = shipping_cost
                for i in range(n_items):
                    amount += cart[i] * item_price[i]
                u_amount[u] = amount
            elif nk == KIND_CART_ADD:
                p = ji[j, J_PARENT]
                item = u_item[u]
                phase = ji[p, J_EXTRA]
                if phase == 0:
                    if cart[item] > 0:
                        ji[p, J_EXTRA] = 1
                    else:
                        cart[item] += 1
                        ji[p, J_EXTRA] = -1
                elif cart[item] == 0:
                    # FoundItem.get(): "Cannot find item in cart" -> carts answers 500
                    ji[j, J_STATUS] = 500
                    ji[j, J_FAILED] = 1
                    ji[p, J_EXTRA] = -1
                    if recording:
                        xc[X_CART_RACE] += 1
                elif phase >= cart_rereads:
                    cart[item] += 1
                    ji[p, J_EXTRA] = -1
                else:
                    ji[p, J_EXTRA] = phase + 1
            # free the worker
            si[d, S_BUSY] -= 1
            if si[d, S_WHEAD] >= 0:
                w = si[d, S_WHEAD]
                si[d, S_WHEAD] = ji[w, J_NEXT]
                if si[d, S_WHEAD] < 0:
                    si[d, S_WTAIL] = -1
                si[d, S_BUSY] += 1
                st[sn] = _code(EV_BEGIN, w, 0)
                sn += 1
            # free the inbound connection: the next pending request takes it
            if ji[j, J_INB]:
                ji[j, J_INB] = 0
                si[d, S_INACTIVE] -= 1
                handed = False
                while si[d, S_INHEAD] >= 0:
                    w = si[d, S_INHEAD]
                    si[d, S_INHEAD] = ji[w, J_NEXT]
                    if si[d, S_INHEAD] < 0:
                        si[d, S_INTAIL] = -1
                    si[d, S_INPEND] -= 1
                    if si[d, S_INACTIVE] >= in_max_req[d]:
                        if recording:
                            stats[d, ST_UO] += 1
                        ji[w, J_STATUS] = 503
                        ji[w, J_FAILED] = 1
                        ji[w, J_FLAG] = FLAG_UO
                        rs, r31 = _rand31(rs)
                        delay = two_mu * tab_two[r31 & (TABLE_SIZE - 1)]
                        ob_t[ob_n] = now + delay
                        ob_c[ob_n] = _code(EV_RESPONSE, w, 0)
                        ob_n += 1
                        continue
                    si[d, S_INACTIVE] += 1
                    ji[w, J_INB] = 1
                    handed = True
                    if si[d, S_BUSY] < svc_workers[d]:
                        si[d, S_BUSY] += 1
                        st[sn] = _code(EV_BEGIN, w, 0)
                        sn += 1
                    else:
                        ji[w, J_NEXT] = -1
                        if si[d, S_WTAIL] >= 0:
                            ji[si[d, S_WTAIL], J_NEXT] = w
                        else:
                            si[d, S_WHEAD] = w
                        si[d, S_WTAIL] = w
                    break
                if not handed:
                    si[d, S_INCONN] -= 1
            rs, r31 = _rand31(rs)
            delay = two_mu * tab_two[r31 & (TABLE_SIZE - 1)]
            ob_t[ob_n] = now + delay
            ob_c[ob_n] = _code(EV_RESPONSE, j, 0)
            ob_n += 1

        if kind == EV_START:
            j = a
            n = ji[j, J_NODE]
            c = node_cluster[n]
            d = node_svc[n]
            dispatch = False
            if svc_is_tcp[d] and cl_mux[c]:
                if ci[c, C_MUX] == 2:
                    idle = cl_idle_timeout_ms[c]
                    if (idle > 0 and now - cf[c, CF_MUXLAST] > idle) or _fault_broke(
                            f_svc, f_kind, f_start, d, cf[c, CF_MUXBORN], now):
                        ci[c, C_MUX] = 0
                        ci[c, C_NCONN] = 0
                if ci[c, C_MUX] == 2:
                    cf[c, CF_MUXLAST] = now
                    dispatch = True
                else:
                    _fifo_push(ci, c, C_PHEAD, C_PTAIL, ji, j)
                    ci[c, C_NPEND] += 1
                    if ci[c, C_MUX] == 0:
                        # (C_NCONN is 0 here: the one connection is gone or never was)
                        ci[c, C_MUX] = 1
                        rs, n_kfree, ob_n = _open_connection(
                            rs, c, d, now, ci, ki, kf, kfree, n_kfree, stats, recording,
                            f_svc, f_kind, f_start, f_end, refused_ms, connect_median_ms,
                            tab_conn, cl_connect_timeout_ms[c], ob_t, ob_c, ob_n)
            else:
                # pop a usable idle connection (LIFO); drop expired or broken ones
                k = ci[c, C_IDLE]
                while k >= 0:
                    idle = cl_idle_timeout_ms[c]
                    if (idle > 0 and now - kf[k, KF_LAST] > idle) or _fault_broke(
                            f_svc, f_kind, f_start, d, kf[k, KF_BORN], now):
                        ci[c, C_IDLE] = ki[k, K_NEXT]
                        ci[c, C_NCONN] -= 1
                        n_kfree = _release(kfree, n_kfree, k)
                        k = ci[c, C_IDLE]
                    else:
                        ci[c, C_IDLE] = ki[k, K_NEXT]
                        break
                if k >= 0:
                    if (not svc_is_tcp[d]) and ci[c, C_NACTIVE] >= cl_max_req[c]:
                        # active-request overflow: the connection stays ready, the request 503s
                        ki[k, K_NEXT] = ci[c, C_IDLE]
                        ci[c, C_IDLE] = k
                        sn = _push_now(st, sn, _code(EV_FAIL, j, FLAG_UO))
                    else:
                        _use_connection(ci, c, ki, k, ji, j, not svc_is_tcp[d])
                        dispatch = True
                else:
                    can_queue = True
                    want_conn = False
                    if svc_is_tcp[d]:
                        # the driver opens a connection when its pool is not full; the sidecar's
                        # TCP proxy refuses one over tcp.maxConnections (UO); else wait in the
                        # driver's pool queue
                        if ci[c, C_NCONN] < cl_driver_max[c]:
                            if ci[c, C_NCONN] >= cl_max_conn[c]:
                                can_queue = False
                                sn = _push_now(st, sn, _code(EV_FAIL, j, FLAG_UO))
                            else:
                                want_conn = True
                    else:
                        if ci[c, C_NPEND] >= cl_max_pending[c]:
                            can_queue = False
                            sn = _push_now(st, sn, _code(EV_FAIL, j, FLAG_UO))
                        elif (ci[c, C_NCONNECTING] < ci[c, C_NPEND] + 1
                              and ci[c, C_NCONN] < cl_max_conn[c]):
                            want_conn = True
                    if can_queue:
                        _fifo_push(ci, c, C_PHEAD, C_PTAIL, ji, j)
                        ci[c, C_NPEND] += 1
                    if want_conn:
                        rs, n_kfree, ob_n = _open_connection(
                            rs, c, d, now, ci, ki, kf, kfree, n_kfree, stats, recording,
                            f_svc, f_kind, f_start, f_end, refused_ms, connect_median_ms,
                            tab_conn, cl_connect_timeout_ms[c], ob_t, ob_c, ob_n)
            if dispatch:
                # the request crosses both sidecars (HTTP: and the callee's inbound connection)
                rs, delay = _draw(rs, two_mu, tab_two)
                if not svc_is_tcp[d]:
                    delay += inbound_connect_ms
                ob_n = _push_event(ob_t, ob_c, ob_n, now + delay, _code(EV_ARRIVE, j, 0))

        if kind == EV_ARRIVE:
            j = a
            n = ji[j, J_NODE]
            d = node_svc[n]
            if _fault_down(f_svc, f_kind, f_start, f_end, d, now) or (
                    d == fe_svc and now < fe_down_until):
                # the pod is gone (or its container restarting): the request is reset
                ji[j, J_STATUS] = 503
                ji[j, J_FAILED] = 1
                ji[j, J_FLAG] = FLAG_UF
                rs, r31 = _rand31(rs)
                delay = sc_mu * tab_one[r31 & (TABLE_SIZE - 1)]
                ob_t[ob_n] = now + delay
                ob_c[ob_n] = _code(EV_RESPONSE, j, 0)
                ob_n += 1
            elif svc_is_tcp[d]:
                if si[d, S_BUSY] < svc_workers[d]:
                    si[d, S_BUSY] += 1
                    kind = EV_BEGIN
                else:
                    ji[j, J_NEXT] = -1
                    if si[d, S_WTAIL] >= 0:
                        ji[si[d, S_WTAIL], J_NEXT] = j
                    else:
                        si[d, S_WHEAD] = j
                    si[d, S_WTAIL] = j
            else:
                # the callee's inbound cluster (its own DestinationRule's connection pool)
                if si[d, S_INCONN] < in_max_conn[d]:
                    if si[d, S_INACTIVE] >= in_max_req[d]:
                        if recording:
                            stats[d, ST_UO] += 1
                        ji[j, J_STATUS] = 503
                        ji[j, J_FAILED] = 1
                        ji[j, J_FLAG] = FLAG_UO
                        rs, r31 = _rand31(rs)
                        delay = two_mu * tab_two[r31 & (TABLE_SIZE - 1)]
                        ob_t[ob_n] = now + delay
                        ob_c[ob_n] = _code(EV_RESPONSE, j, 0)
                        ob_n += 1
                    else:
                        si[d, S_INCONN] += 1
                        si[d, S_INACTIVE] += 1
                        ji[j, J_INB] = 1
                        if si[d, S_INACTIVE] + si[d, S_INPEND] > stats[d, ST_PEAK_INBOUND]:
                            stats[d, ST_PEAK_INBOUND] = si[d, S_INACTIVE] + si[d, S_INPEND]
                        if si[d, S_BUSY] < svc_workers[d]:
                            si[d, S_BUSY] += 1
                            kind = EV_BEGIN
                        else:
                            ji[j, J_NEXT] = -1
                            if si[d, S_WTAIL] >= 0:
                                ji[si[d, S_WTAIL], J_NEXT] = j
                            else:
                                si[d, S_WHEAD] = j
                            si[d, S_WTAIL] = j
                elif si[d, S_INPEND] < in_max_pending[d]:
                    ji[j, J_NEXT] = -1
                    if si[d, S_INTAIL] >= 0:
                        ji[si[d, S_INTAIL], J_NEXT] = j
                    else:
                        si[d, S_INHEAD] = j
                    si[d, S_INTAIL] = j
                    si[d, S_INPEND] += 1
                    if si[d, S_INACTIVE] + si[d, S_INPEND] > stats[d, ST_PEAK_INBOUND]:
                        stats[d, ST_PEAK_INBOUND] = si[d, S_INACTIVE] + si[d, S_INPEND]
                else:
                    if recording:
                        stats[d, ST_UO] += 1
                    ji[j, J_STATUS] = 503
                    ji[j, J_FAILED] = 1
                    ji[j, J_FLAG] = FLAG_UO
                    rs, r31 = _rand31(rs)
                    delay = two_mu * tab_two[r31 & (TABLE_SIZE - 1)]
                    ob_t[ob_n] = now + delay
                    ob_c[ob_n] = _code(EV_RESPONSE, j, 0)
                    ob_n += 1

        if kind == EV_BEGIN:
            j = a
            n = ji[j, J_NODE]
            s = node_svc[n]
            ji[j, J_PHASE] = 1
            if recording and svc_is_tcp[s]:
                stats[s, ST_OPS] += 1
            rs, work = _draw_work(rs, node_work_ms[n], tab_work, s, f_svc, f_kind, f_start,
                                  f_end, f_factor, now)
            cpu_t, cpu_s = _cpu_add(s, j, work, now, si, sf, pk, pj, pn, svc_cores, svc_next,
                                    cpu_t, cpu_s)

        if kind == EV_FAIL:
            # a local failure of one attempt: UO (overflow, never retried) or UF (connect
            # failure, retried while attempts and the cluster's retry budget allow)
            j = a
            n = ji[j, J_NODE]
            c = node_cluster[n]
            d = node_svc[n]
            if recording:
                if b == FLAG_UO:
                    stats[d, ST_UO] += 1
                else:
                    stats[d, ST_UF] += 1
            _release_retry(ji, ci, j, c)
            retried = False
            if b == FLAG_UF and not svc_is_tcp[d] and ji[j, J_ATTEMPT] <= retry_attempts:
                if ci[c, C_NRETRY] < cl_max_retries[c]:
                    ci[c, C_NRETRY] += 1
                    ji[j, J_HOLD] = 1
                    rs, r31 = _rand31(rs)
                    back = (r31 / 2147483648.0) * retry_base_ms * (1 << (ji[j, J_ATTEMPT] - 1))
                    ji[j, J_ATTEMPT] += 1
                    ji[j, J_STATUS] = node_ok_status[n]
                    ji[j, J_FAILED] = 0
                    ji[j, J_FLAG] = FLAG_NONE
                    if recording:
                        stats[d, ST_RETRY] += 1
                    ob_n = _push_event(ob_t, ob_c, ob_n, now + back, _code(EV_START, j, 0))
                    retried = True
                elif recording:
                    stats[d, ST_RETRY_OVF] += 1
            if not retried:
                _fail_job(ji, j, b)
                # a local reply: the caller gets it now
                sn = _push_now(st, sn, _code(EV_RESPONSE, j, 1))

        if kind == EV_CONNECT:
            k = a
            c = ki[k, K_CLUSTER]
            d = cl_dest[c]
            ci[c, C_NCONNECTING] -= 1
            if b == 1:
                kf[k, KF_LAST] = now
                ki[k, K_SERVED] = 0
                if svc_is_tcp[d] and cl_mux[c]:
                    ci[c, C_MUX] = 2
                    cf[c, CF_MUXLAST] = now
                    cf[c, CF_MUXBORN] = now
                    n_kfree = _release(kfree, n_kfree, k)
                    # every operation waiting for the one connection goes out on it (TCP: no
                    # inbound connection to add)
                    j = ci[c, C_PHEAD]
                    while j >= 0:
                        nxt = ji[j, J_NEXT]
                        rs, delay = _draw(rs, two_mu, tab_two)
                        ob_n = _push_event(ob_t, ob_c, ob_n, now + delay, _code(EV_ARRIVE, j, 0))
                        j = nxt
                    ci[c, C_PHEAD] = -1
                    ci[c, C_PTAIL] = -1
                    ci[c, C_NPEND] = 0
                else:
                    sn = _push_now(st, sn, _code(EV_CONN_READY, k, 0))
            else:
                n_kfree = _release(kfree, n_kfree, k)
                ci[c, C_NCONN] -= 1
                if recording:
                    stats[d, ST_CONN_FAIL] += 1
                if svc_is_tcp[d]:
                    if cl_mux[c]:
                        ci[c, C_MUX] = 0
                        ci[c, C_NCONN] = 0
                        # every operation waiting for the one connection fails
                        sn = _fail_all_pending(ci, c, ji, st, sn)
                    else:
                        # the driver fails the operation that asked for the connection
                        if ci[c, C_PHEAD] >= 0:
                            j = _fifo_pop(ci, c, C_PHEAD, C_PTAIL, ji)
                            ci[c, C_NPEND] -= 1
                            sn = _push_now(st, sn, _code(EV_FAIL, j, FLAG_UF))
                else:
                    # Envoy purges every pending request of the pool on a connect failure
                    sn = _fail_all_pending(ci, c, ji, st, sn)

        if kind == EV_TIMEOUT:
            j = a
            if ji[j, J_ALIVE] and (ji[j, J_STAMP] & _B_MASK) == b and not ji[j, J_REPORTED]:
                ji[j, J_REPORTED] = 1
                if recording:
                    xc[X_TIMEOUTS] += 1
                sn = _push_now(st, sn,
                               _code(EV_REPORT, ji[j, J_PARENT], (ji[j, J_NODE] << 10) | 504))

        if kind == EV_HATCH_DONE:
            recording = True
            t_start = now
            n_rec = 0
            n_srec = 0
            stats[:, :] = 0
            xc[:X_EVENTS] = 0

        if kind == EV_OPEN_ARRIVAL:
            if n_ufree == 0:
                status = ERR_CAPACITY
                break
            u = ufree[n_ufree - 1]
            n_ufree -= 1
            u_pos[u] = 0
            sn = _push_now(st, sn, _code(EV_USER_NEXT, u, 0))
            rs, r31 = _rand31(rs)
            gap = -np.log(1.0 - r31 / 2147483648.0) * loop_gap_ms
            ob_n = _push_event(ob_t, ob_c, ob_n, now + gap, _code(EV_OPEN_ARRIVAL, 0, 0))

    xc[X_SIM_END_MS] = now
    return (status, rec_ep[:n_rec], rec_lat[:n_rec], rec_fail[:n_rec], t_start, now,
            stats, srec_svc[:n_srec], srec_lat[:n_srec], xc)


@njit(cache=True, inline="always")
def _gather_groups(keys, values, n_groups):
    """``values`` gathered by group (keys in 0..n_groups-1) with a counting scatter:
    (offsets, grouped), group g's values being ``grouped[offsets[g]:offsets[g + 1]]`` in their
    original order."""
    counts = np.zeros(n_groups + 1, np.int64)
    for i in range(keys.shape[0]):
        counts[keys[i] + 1] += 1
    offsets = np.cumsum(counts)
    fill = offsets[:n_groups].copy()
    grouped = np.empty(keys.shape[0], np.float64)
    for i in range(keys.shape[0]):
        g = keys[i]
        grouped[fill[g]] = values[i]
        fill[g] += 1
    return offsets, grouped


@njit(cache=True)
def group_stats(keys, values, n_groups):
    """Per group: count, mean, min, max, median, p95, p99 of ``values`` (NaN when empty).

    Percentiles are the nearest-rank values of the sorted group (what Locust's response-time
    buckets approximate). Groups are gathered with a counting scatter, then each is sorted.
    """
    out = np.full((n_groups, 7), np.nan)
    offsets, grouped = _gather_groups(keys, values, n_groups)
    for g in range(n_groups):
        cnt = offsets[g + 1] - offsets[g]
        out[g, 0] = cnt
        if cnt == 0:
            continue
        vals = np.sort(grouped[offsets[g]:offsets[g + 1]])
        out[g, 1] = vals.mean()
        out[g, 2] = vals[0]
        out[g, 3] = vals[cnt - 1]
        out[g, 4] = vals[min(cnt - 1, int(np.ceil(0.50 * cnt)) - 1)]
        out[g, 5] = vals[min(cnt - 1, int(np.ceil(0.95 * cnt)) - 1)]
        out[g, 6] = vals[min(cnt - 1, int(np.ceil(0.99 * cnt)) - 1)]
    return out


@njit(cache=True)
def group_p99(keys, values, n_groups):
    """Per group: (count, p99) of ``values`` (p99 NaN when empty), by selection, not sorting."""
    out = np.full((n_groups, 2), np.nan)
    offsets, grouped = _gather_groups(keys, values, n_groups)
    for g in range(n_groups):
        cnt = offsets[g + 1] - offsets[g]
        out[g, 0] = cnt
        if cnt == 0:
            continue
        k = min(cnt - 1, int(np.ceil(0.99 * cnt)) - 1)
        out[g, 1] = np.partition(grouped[offsets[g]:offsets[g + 1]], k)[k]
    return out
