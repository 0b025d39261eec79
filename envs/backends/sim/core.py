"""The simulator's event-driven core: one Numba-jitted function over flat NumPy arrays.

**Why this module is over 600 lines.** ``simulate`` is one function of ~900 lines and cannot be
split across modules without becoming several jitted functions that call each other once per
event. That costs speed: session 1 measured 2-4 % per step for helper calls in the three hottest
handlers alone (Numba reference-counts the arrays passed to a branching helper), which is why
those handlers keep their code written out. Everything that can live elsewhere at no cost does:
the data layout in :mod:`envs.backends.sim.kernel_layout`, the inlined mechanisms in
:mod:`envs.backends.sim.kernel_helpers` (inlined at the IR level, so no call remains) and the
report statistics in :mod:`envs.backends.sim.kernel_stats`. ``python benchmarks/bench_sim.py``
measures the step time (BENCHMARKS.md, Simulator speed), and ``python scripts/sim_digest.py``
checks that the reports stay byte-identical.

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
  job slots, replies) is one ``_helper`` (``kernel_helpers``) inlined into ``simulate`` at the
  Numba IR level;
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

from envs.backends.sim.kernel_helpers import (
    _code,
    _cpu_add,
    _cpu_rate,
    _draw,
    _draw_work,
    _earliest_cpu,
    _fail_all_pending,
    _fail_job,
    _fault_broke,
    _fault_down,
    _fifo_pop,
    _fifo_push,
    _free_job,
    _heap_push,
    _heap_refill_root,
    _in_flight,
    _new_job,
    _open_connection,
    _push_event,
    _push_now,
    _rand31,
    _release,
    _release_retry,
    _reply,
    _use_connection,
)
from envs.backends.sim.kernel_layout import (
    _B_MASK,
    ALIVE_CLIENT_DONE,
    C_IDLE,
    C_MUX,
    C_NACTIVE,
    C_NCONN,
    C_NCONNECTING,
    C_NPEND,
    C_NRETRY,
    C_PHEAD,
    C_PTAIL,
    CF_MUXBORN,
    CF_MUXLAST,
    CONNECT_REFUSED,
    CRASH_ON_503,
    ERR_CAPACITY,
    ERR_STALLED,
    EV_AFTER_CPU,
    EV_ARRIVE,
    EV_BEGIN,
    EV_CONN_READY,
    EV_CONNECT,
    EV_CPU,
    EV_FAIL,
    EV_FINISH,
    EV_HATCH_DONE,
    EV_OPEN_ARRIVAL,
    EV_REPORT,
    EV_RESPONSE,
    EV_START,
    EV_TIMEOUT,
    EV_USER_NEXT,
    F_ATTEMPT,
    F_ISSUE,
    FLAG_NONE,
    FLAG_REFUSED,
    FLAG_RESET,
    FLAG_UF,
    FLAG_UO,
    J_ALIVE,
    J_ATTEMPT,
    J_BADBODY,
    J_CONN,
    J_COUNTED,
    J_EXTRA,
    J_FAILED,
    J_FLAG,
    J_HOLD,
    J_INB,
    J_NEXT,
    J_NODE,
    J_PARENT,
    J_PENDING,
    J_PHASE,
    J_REPORTED,
    J_STAMP,
    J_STATUS,
    J_STEP,
    J_USER,
    K_CLUSTER,
    K_NEXT,
    K_SERVED,
    KF_BORN,
    KF_LAST,
    KIND_CART_ADD,
    KIND_CART_DELETE,
    KIND_CART_READ,
    KIND_PAYMENT,
    NCF,
    NCI,
    NJF,
    NJI,
    NSI,
    NST,
    NX,
    OK,
    ON_AS_401,
    ON_AS_500,
    ON_BODY_AS_200,
    ON_IGNORE,
    PHASE_ORPHAN,
    S_BUSY,
    S_INACTIVE,
    S_INCONN,
    S_INHEAD,
    S_INPEND,
    S_INTAIL,
    S_NCPU,
    S_WHEAD,
    S_WTAIL,
    SF_TLAST,
    SF_V,
    ST_ATTEMPTS,
    ST_CONN_FAIL,
    ST_CONN_OPEN,
    ST_CRASH_RESET,
    ST_FAIL,
    ST_OPS,
    ST_PEAK_CONN,
    ST_PEAK_INBOUND,
    ST_PEAK_INCONN,
    ST_REFUSED,
    ST_REQ,
    ST_RESET,
    ST_RETRY,
    ST_RETRY_OVF,
    ST_UF,
    ST_UO,
    ST_URX,
    TABLE_SIZE,
    X_ABANDONED,
    X_CART_RACE,
    X_CRASHES,
    X_DECLINES,
    X_DOWN_MS,
    X_EVENTS,
    X_SIM_END_MS,
    X_TASK_ERRORS,
    X_TIMEOUTS,
)


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
    svc_stats, srec_svc, srec_lat_ms, extra, attempt_ms, in_flight_area).

    ``rec_*`` hold exactly ``n_requests`` Locust records (endpoint index, latency, failed);
    ``svc_stats`` the per-destination counters (``ST_*`` columns); ``srec_*`` one record per
    HTTP call completed at a caller (destination, latency as the caller's sidecar saw it);
    ``extra`` the run's ``X_*`` counters; ``attempt_ms`` per destination the summed duration of
    the attempts counted in ``ST_ATTEMPTS`` (ms); ``in_flight_area`` per destination, over its
    calling sidecars' outbound clusters, the largest integral over the recorded window of a
    cluster's attempts in flight (active + pending), attempts × ms.

    An *attempt* is one try of a call through the caller's outbound cluster: from EV_START
    (a first try or a retry) until it fails locally (EV_FAIL: UO, UF, refused, reset) or its
    answer reaches the caller's sidecar (EV_RESPONSE), even after the caller's application
    stopped waiting for it (EV_TIMEOUT: the sidecars do not see that). For
    a TCP destination a call is one database / broker *operation* of the driver (no retries: one
    attempt per operation), not a TCP connection.
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
    # summed durations of the attempts counted in ST_ATTEMPTS, ms, per destination
    sdur = np.zeros(n_svc, np.float64)
    # per outbound cluster: attempts in flight now (active + pending) and the time integral of
    # that count since recording started (attempts × ms; see ``_in_flight``)
    cl_inf = np.zeros(n_cl, np.int64)
    cl_area = np.zeros(n_cl, np.float64)
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
                            stats[d, ST_PEAK_CONN] = max(stats[d, ST_PEAK_CONN],
                                                         ci[c, C_NCONN])
                        if _fault_down(f_svc, f_kind, f_start, f_end, d, now):
                            ob_t[ob_n] = now + refused_ms
                            ob_c[ob_n] = _code(EV_CONNECT, k2, CONNECT_REFUSED)
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
            if b == 0 and ji[j, J_FAILED] and ji[j, J_FLAG] == FLAG_RESET and not svc_is_tcp[d]:
                # an upstream reset that is not an overflow: the router may retry it (EV_FAIL
                # ends the attempt)
                st[sn] = _code(EV_FAIL, j, FLAG_RESET)
                sn += 1
                if ready_conn >= 0:
                    st[sn] = _code(EV_CONN_READY, ready_conn, 0)
                    sn += 1
                continue
            if ji[j, J_HOLD]:
                ci[c, C_NRETRY] -= 1
                ji[j, J_HOLD] = 0
            lat = now - jf[j, F_ISSUE]
            # the attempt leaves the pool (a local reply's attempt already left it in EV_FAIL;
            # a request the front-end's crash lost leaves it now)
            orphan = b != 0 and ji[j, J_PHASE] == PHASE_ORPHAN
            if b == 0 or orphan:
                _in_flight(cl_inf, cl_area, c, now, -1)
            if recording:
                stats[d, ST_REQ] += 1
                if ji[j, J_STATUS] >= 500:
                    stats[d, ST_FAIL] += 1
                if b == 0 or orphan:
                    # the attempt's end: counted now unless the caller's timeout or an inbound
                    # overflow counted it already; a cause (reset) always comes with its attempt
                    cause = orphan or ji[j, J_FLAG] == FLAG_RESET
                    if cause or not ji[j, J_COUNTED]:
                        stats[d, ST_ATTEMPTS] += 1
                        sdur[d] += now - jf[j, F_ATTEMPT]
                    if cause:
                        stats[d, ST_RESET] += 1
                        stats[d, ST_CRASH_RESET] += orphan
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
                        # (closed loop); an arriving session gives up instead and leaves
                        # without its other requests (open loop)
                        if recording:
                            xc[X_TASK_ERRORS] += 1
                            if open_loop:
                                xc[X_ABANDONED] += loop_root.shape[0] - 1
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
                if open_loop and u_pos[u] == 0:
                    # the session is over: its loop is done, or its catalogue failed
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
                            stats[d, ST_ATTEMPTS] += 1
                            sdur[d] += now - jf[w, F_ATTEMPT]
                            ji[w, J_COUNTED] = 1
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
            # a new attempt enters the caller's pool (J_COUNTED is 0: a new job's, or cleared
            # by the EV_FAIL that retries it)
            jf[j, F_ATTEMPT] = now
            _in_flight(cl_inf, cl_area, c, now, 1)
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
                ji[j, J_FLAG] = FLAG_RESET
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
                            # the attempt ends here (its 503 still travels back)
                            stats[d, ST_ATTEMPTS] += 1
                            sdur[d] += now - jf[j, F_ATTEMPT]
                            ji[j, J_COUNTED] = 1
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
                        if recording and si[d, S_INCONN] > stats[d, ST_PEAK_INCONN]:
                            stats[d, ST_PEAK_INCONN] = si[d, S_INCONN]
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
                        stats[d, ST_ATTEMPTS] += 1
                        sdur[d] += now - jf[j, F_ATTEMPT]
                        ji[j, J_COUNTED] = 1
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
            # a failure that ends one attempt: UO (overflow, never retried), UF (connect
            # timeout) or a reset (connection refused / request reset by a down callee); UF and
            # resets are retried while attempts and the cluster's retry budget allow
            j = a
            n = ji[j, J_NODE]
            c = node_cluster[n]
            d = node_svc[n]
            _in_flight(cl_inf, cl_area, c, now, -1)
            if recording:
                stats[d, ST_ATTEMPTS] += 1
                sdur[d] += now - jf[j, F_ATTEMPT]
                if b == FLAG_UO:
                    stats[d, ST_UO] += 1
                elif b == FLAG_UF:
                    stats[d, ST_UF] += 1
                else:
                    stats[d, ST_RESET] += 1
                    stats[d, ST_REFUSED] += b == FLAG_REFUSED
            _release_retry(ji, ci, j, c)
            retried = False
            if b >= FLAG_UF and not svc_is_tcp[d] and ji[j, J_ATTEMPT] <= retry_attempts:
                if ci[c, C_NRETRY] < cl_max_retries[c]:
                    ci[c, C_NRETRY] += 1
                    ji[j, J_HOLD] = 1
                    rs, r31 = _rand31(rs)
                    back = (r31 / 2147483648.0) * retry_base_ms * (1 << (ji[j, J_ATTEMPT] - 1))
                    ji[j, J_ATTEMPT] += 1
                    ji[j, J_STATUS] = node_ok_status[n]
                    ji[j, J_FAILED] = 0
                    ji[j, J_FLAG] = FLAG_NONE
                    ji[j, J_COUNTED] = 0
                    if recording:
                        stats[d, ST_RETRY] += 1
                    ob_n = _push_event(ob_t, ob_c, ob_n, now + back, _code(EV_START, j, 0))
                    retried = True
                elif recording:
                    stats[d, ST_RETRY_OVF] += 1
            if not retried:
                if (recording and b >= FLAG_UF and not svc_is_tcp[d]
                        and ji[j, J_ATTEMPT] > retry_attempts):
                    # every retry attempt used (URX)
                    stats[d, ST_URX] += 1
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
                # b 0: the connect timed out (UF); b 2: the down callee refused it (a reset)
                flag = FLAG_REFUSED if b == CONNECT_REFUSED else FLAG_UF
                n_kfree = _release(kfree, n_kfree, k)
                ci[c, C_NCONN] -= 1
                if recording:
                    stats[d, ST_CONN_FAIL] += 1
                if svc_is_tcp[d]:
                    if cl_mux[c]:
                        ci[c, C_MUX] = 0
                        ci[c, C_NCONN] = 0
                        # every operation waiting for the one connection fails
                        sn = _fail_all_pending(ci, c, ji, st, sn, flag)
                    else:
                        # the driver fails the operation that asked for the connection
                        if ci[c, C_PHEAD] >= 0:
                            j = _fifo_pop(ci, c, C_PHEAD, C_PTAIL, ji)
                            ci[c, C_NPEND] -= 1
                            sn = _push_now(st, sn, _code(EV_FAIL, j, flag))
                else:
                    # Envoy purges every pending request of the pool on a connect failure
                    sn = _fail_all_pending(ci, c, ji, st, sn, flag)

        if kind == EV_TIMEOUT:
            j = a
            if ji[j, J_ALIVE] and (ji[j, J_STAMP] & _B_MASK) == b and not ji[j, J_REPORTED]:
                ji[j, J_REPORTED] = 1
                if recording:
                    xc[X_TIMEOUTS] += 1
                # The caller's application stops waiting (orders' 5 s future); the request runs
                # on through both sidecars, which count it when its answer arrives, at its real
                # duration and status, as on the local mesh. Envoy's UT is a route's timeout,
                # which no route here sets, so nothing is counted as UT (ST_UT stays 0).
                sn = _push_now(st, sn,
                               _code(EV_REPORT, ji[j, J_PARENT], (ji[j, J_NODE] << 10) | 504))

        if kind == EV_HATCH_DONE:
            recording = True
            t_start = now
            n_rec = 0
            n_srec = 0
            stats[:, :] = 0
            xc[:X_EVENTS] = 0
            xc[X_ABANDONED] = 0
            sdur[:] = 0.0
            # the in-flight areas start now (the attempts in flight stay in flight); so do the
            # peaks of connections held (those held now count)
            for c in range(n_cl):
                cl_area[c] = -cl_inf[c] * now
                d = cl_dest[c]
                stats[d, ST_PEAK_CONN] = max(stats[d, ST_PEAK_CONN], ci[c, C_NCONN])
            for s in range(n_svc):
                stats[s, ST_PEAK_INCONN] = si[s, S_INCONN]

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
    # per destination, the largest in-flight area of its calling pools (the attempts still in
    # flight count up to the end)
    svc_area = np.zeros(n_svc, np.float64)
    for c in range(n_cl):
        cl_area[c] += cl_inf[c] * now
        svc_area[cl_dest[c]] = max(svc_area[cl_dest[c]], cl_area[c])
    return (status, rec_ep[:n_rec], rec_lat[:n_rec], rec_fail[:n_rec], t_start, now,
            stats, srec_svc[:n_srec], srec_lat[:n_srec], xc, sdur, svc_area)
