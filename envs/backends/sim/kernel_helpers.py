"""The simulator kernel's mechanisms, each written once: heap push / pop, processor-sharing CPU,
opening a connection, FIFO queues, job slots, replies, fault windows, random draws.

Every function is ``@njit(inline="always")``: Numba inlines it into
:func:`envs.backends.sim.core.simulate` at the IR level, so it costs no call. The speed notes
(branch-free helpers on hot paths, arithmetic order kept for bit-identical results) are in
``core``'s docstring.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from envs.backends.sim.kernel_layout import (
    _B_MASK,
    _LCG_ADD,
    _LCG_MUL,
    C_NACTIVE,
    C_NCONN,
    C_NCONNECTING,
    C_NPEND,
    C_NRETRY,
    C_PHEAD,
    C_PTAIL,
    CONNECT_REFUSED,
    EV_CONNECT,
    EV_FAIL,
    EV_RESPONSE,
    F_ISSUE,
    J_ALIVE,
    J_ATTEMPT,
    J_CONN,
    J_FAILED,
    J_FLAG,
    J_HOLD,
    J_NEXT,
    J_NODE,
    J_PARENT,
    J_STAMP,
    J_STATUS,
    J_USER,
    K_CLUSTER,
    K_SERVED,
    KF_BORN,
    NJI,
    S_NCPU,
    SF_TLAST,
    SF_V,
    ST_CONN_OPEN,
    ST_PEAK_CONN,
    TABLE_SIZE,
)


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
    """Job j's call fails with a 503 (``flag``: a ``FLAG_*`` of the cause, FLAG_NONE)."""
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
def _fail_all_pending(ci, c, ji, st, sn, flag):
    """Every request pending in cluster c fails now (``flag``: FLAG_UF for a connect timeout,
    FLAG_REFUSED for a refused connection; via EV_FAIL on the immediate stack); the queue is
    emptied. Returns the new stack size."""
    j = ci[c, C_PHEAD]
    while j >= 0:
        nxt = ji[j, J_NEXT]
        sn = _push_now(st, sn, _code(EV_FAIL, j, flag))
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
def _in_flight(count, area, c, now, delta):
    """Cluster c's attempts in flight (active + pending) change by ``delta`` (+1 an attempt
    starts, -1 it ends) at ``now`` ms. ``area`` accumulates each attempt's end time minus its
    start time, which sums to the time integral of ``count`` (attempts × ms) once the attempts
    still in flight are closed at the window's end (``+ count * t_end``) and those in flight when
    it opened are started at its start (``area = -count * t_start``). Branch-free."""
    area[c] -= delta * now
    count[c] += delta


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
    """Cluster c starts a connection to service d: refused while d is down (EV_CONNECT b
    ``CONNECT_REFUSED``), else established after a drawn time (b 1) or failed at
    ``connect_timeout_ms`` (b 0).
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
        stats[d, ST_PEAK_CONN] = max(stats[d, ST_PEAK_CONN], ci[c, C_NCONN])
    if _fault_down(f_svc, f_kind, f_start, f_end, d, now):
        ob_n = _push_event(ob_t, ob_c, ob_n, now + refused_ms,
                           _code(EV_CONNECT, k, CONNECT_REFUSED))
    else:
        rs, tc = _draw(rs, connect_median_ms, tab_conn)
        if tc > connect_timeout_ms:
            ob_n = _push_event(ob_t, ob_c, ob_n, now + connect_timeout_ms,
                               _code(EV_CONNECT, k, 0))
        else:
            ob_n = _push_event(ob_t, ob_c, ob_n, now + tc, _code(EV_CONNECT, k, 1))
    return rs, n_kfree, ob_n
