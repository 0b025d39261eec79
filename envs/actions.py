"""The agent's action catalogues: which DestinationRule knob of which service one action moves.

An action is one discrete step on one knob of one service's ``connectionPool`` (or, in the
extended catalogue, a global no-op). :class:`ActionCatalogue` numbers the actions, applies one to
a :data:`MeshConfig` (service → :class:`~envs.istio.ConnectionPool`) and describes it. This module
also builds the notebook's random initial configuration (:func:`classic_initial_config`). What a
knob means to Envoy (effective values, ranges, valid inputs) is in :mod:`envs.knobs`.

Tunable services
----------------
The default :data:`TUNABLE_SERVICES` are the 12 services that receive traffic on the request
path, in complete-demo.yaml order: carts, carts-db, catalogue, catalogue-db, orders, orders-db,
payment, rabbitmq, session-db, shipping, user, user-db. Left out:

* ``front-end``: its DestinationRule governs the ingress gateway → front-end hop, which every
  request crosses; one bad value there takes the whole shop down and fails the health check.
  That is why the notebook skipped it (``if i != 4``).
* ``queue-master``: nobody calls it. It consumes rabbitmq asynchronously, so its DestinationRule
  acts on no traffic and actions on it would be dead actions.

Callers may pass another list (validated: an unknown service is a ValueError naming it), e.g.
:data:`CLASSIC_SERVICES`, the notebook's 13 (all but front-end), for comparison with the original.

The notebook's own indexing was broken: it meant ``index = service × 12 + act`` over 13 services
(156 actions) but computed ``service = action // 13`` and ``act = action % 13``; so ``act`` 12
fell into maxRetries −10, orders (index 5) was hit twice as often (``if i == 4: i += 1``) and
user and user-db were never tuned. Here ``index = service_index × actions_per_service + act``.

Catalogues
----------
``classic``: the notebook's 12 actions per service, in the notebook's order; 12 × 12 = 144
actions on the default services. Each row is one ``act`` (the offset inside a service's block):

| act | knob | change |
|---:|---|---|
| 0 | tcp.maxConnections | +20 |
| 1 | tcp.maxConnections | -5 |
| 2 | http.http1MaxPendingRequests | +40 |
| 3 | http.http1MaxPendingRequests | -10 |
| 4 | http.maxRequestsPerConnection | +40 |
| 5 | http.maxRequestsPerConnection | -10 |
| 6 | tcp.connectTimeout | +200ms |
| 7 | tcp.connectTimeout | -50ms |
| 8 | http.http2MaxRequests | +200 |
| 9 | http.http2MaxRequests | -50 |
| 10 | http.maxRetries | +40 |
| 11 | http.maxRetries | -10 |

``extended``: the notebook's 12, then every other knob the notebook's configurator exposes
(tcpKeepalive probes / time / interval, http idleTimeout, useClientProtocol), 21 actions per
service, and one global no-op as the **last** index (so ``index = service × 21 + act`` keeps the
notebook's form and the no-op is ``len(catalogue) - 1``); 12 × 21 + 1 = 253 actions on the default
services:

| act | knob | change |
|---:|---|---|
| 0 | tcp.maxConnections | +20 |
| 1 | tcp.maxConnections | -5 |
| 2 | http.http1MaxPendingRequests | +40 |
| 3 | http.http1MaxPendingRequests | -10 |
| 4 | http.maxRequestsPerConnection | +40 |
| 5 | http.maxRequestsPerConnection | -10 |
| 6 | tcp.connectTimeout | +200ms |
| 7 | tcp.connectTimeout | -50ms |
| 8 | http.http2MaxRequests | +200 |
| 9 | http.http2MaxRequests | -50 |
| 10 | http.maxRetries | +40 |
| 11 | http.maxRetries | -10 |
| 12 | tcp.tcpKeepalive.probes | +1 |
| 13 | tcp.tcpKeepalive.probes | -1 |
| 14 | tcp.tcpKeepalive.time | +300s |
| 15 | tcp.tcpKeepalive.time | -300s |
| 16 | tcp.tcpKeepalive.interval | +15s |
| 17 | tcp.tcpKeepalive.interval | -15s |
| 18 | http.idleTimeout | +60000ms |
| 19 | http.idleTimeout | -60000ms |
| 20 | http.useClientProtocol | toggle |
| last | (none) | no-op |

``ladder`` (MeshEnv v1's default): for each of the six classic knobs, one rung up and one rung
down its :data:`LADDERS` (acts ``2k`` up, ``2k+1`` down, in the classic knobs' order), then a
global no-op; over :data:`CONTROL_SERVICES` (the 12 above and the front-end's gateway pool)
13 × 12 + 1 = 157 actions. Additive steps cannot leave Istio's unlimited defaults (``-5`` of
2^32-1 changes nothing Envoy notices), so a controller starting there could not act; rungs
cross the useful range in a few steps and work from any value (:func:`next_rung`):

| knob | rungs |
|---|---|
| tcp.maxConnections | 1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, unlimited |
| http.http1MaxPendingRequests, http.http2MaxRequests | 1, 4, 16, 64, 256, 1024, unlimited |
| http.maxRequestsPerConnection | 1, 10, 100, 1000, unlimited |
| tcp.connectTimeout | 1, 10, 100, 1000, 10000 ms |
| http.maxRetries | 1, 2, 4, 16, 64, 256, unlimited |

``setpoint`` (what ``experiments/pg_sweep.py`` trains with): for each of the six classic knobs,
one action per rung of its ladder that sets the knob to that rung (acts in the classic knobs'
order, rungs ascending: 11 + 7 + 7 + 5 + 5 + 7 = 42 per service), then the global no-op; over
:data:`CONTROL_SERVICES`, 13 × 42 + 1 = 547 actions. Any configuration of the ladders is one
action per knob away: the gateway's ``http2MaxRequests`` from unlimited to 16, which pays only
once it binds, is one action here and four ``ladder`` moves (three of which change nothing a
user feels).

``setpoint_restore``: ``setpoint``'s 42 acts per service, then two global actions: **restore**
(index ``S × 42``: every tuned service's DestinationRule removed, i.e. Istio's defaults on the
whole mesh — an operator's rollback, ``kubectl delete destinationrule`` of each) and the no-op
(last); 13 × 42 + 2 = 548 actions. From the notebook's random start, where every knob of every
service is drawn in 1..100 and several bind at once, undoing the draw is one action instead of
one per binding knob.

``setpoint_reset``: ``setpoint``'s 42 acts per service plus a 43rd, **reset** (act 42: that
service's DestinationRule removed, i.e. Istio's defaults for that service alone), then the global
no-op; 13 × 43 + 1 = 560 actions. Unlike ``setpoint_restore``'s whole-mesh restore, a reset
is scored per service by the shared module from that service's own features (a limit that
binds: ``UO`` overflow, demand against its limits), so "undo the limit that binds here" is one
rule learned once for every service, and resetting a callee leaves the gateway's cap in place.

Step sizes of the extended knobs (the notebook's are kept as they were):

* keepalive probes ±1: the natural unit on a small range (Linux default 9, kernel maximum 127).
* keepalive time ±300 s: keepalive only matters against middleboxes that drop idle flows after
  minutes (e.g. cloud load balancers, 4–10 min); 300 s steps reach that range from the Linux
  default of 7200 s in about 23 steps and straddle those cut-offs.
* keepalive interval ±15 s: dead-peer detection takes about time + probes × interval; with 9
  probes a 15 s step moves it by 135 s, the same scale as one time step. From the 75 s default
  five steps reach the floor.
* http idleTimeout ±60 s: Istio's default is 1 h, so minute steps cover the range in 60 steps;
  under the reference load a busy connection is reused within milliseconds, so the knob only
  bites near its floor (1 ms), where every idle gap costs a reconnect.
* useClientProtocol: a boolean, so one toggle action.

(The notebook's configurator exposed these knobs but never used them in an action; its
``set_tcp_keeplive_probes`` wrote ``tcpKeepalive.time`` instead of the probe count. Here
probes is a count and time / interval are durations.)

Symmetric steps: unlike the notebook's limits (where raising is safe and lowering is not), none of
these has a safe direction.

The ``http.*`` actions change the YAML of TCP-only destinations (the databases and rabbitmq) too:
the notebook did the same, Istio accepts it, and Envoy ignores those settings on TCP traffic, so
those actions have no effect (:meth:`ActionCatalogue.inert_indices` lists them).

What an action does to a field
------------------------------
An action first materialises the field's *effective* value, i.e. what Envoy enforces
(:func:`envs.knobs.effective_value`: Istio's and Linux's defaults for unset fields, unlimited
capped to ``INT32_MAX`` = 2147483647, the largest value a DestinationRule can carry). It then
adds the delta and clamps to the knob's range (:func:`envs.knobs.knob_range`: counts and
millisecond durations to [1, INT32_MAX]; keepalive probes to [1, 127]; keepalive time and
interval to [1 s, 32767 s] in whole seconds). The result is always written explicitly. So
"+20 connections" on an unset maxConnections gives the explicit INT32_MAX (still effectively
unlimited) and "-5" gives INT32_MAX - 5. The toggle writes ``not effective``; toggling
useClientProtocol on while h2UpgradePolicy is UPGRADE would make a rule Istio rejects, so it
raises ValueError (no catalogue action sets h2UpgradePolicy). An input field the action touches
that Istio would reject (negative, above INT32_MAX, a duration below 1 ms) is a ValueError
naming the service and field (:func:`envs.knobs.check_input_field`).

Initial configuration
---------------------
:func:`classic_initial_config` reproduces the notebook's ``__make_init_config``: for every tunable
service, the six :data:`CLASSIC_KNOBS` drawn uniformly from 1..upper (connectTimeout in ms). The
notebook also set the http.* fields of TCP-only services; that is kept (Istio accepts them, they
have no effect there). :func:`istio_default_config` is the empty configuration: no rules.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, TypeAlias

import numpy as np

from envs.istio import INT32_MAX, ConnectionPool, H2UpgradePolicy, resolve
from envs.knobs import (
    DURATION_KNOBS,
    MS_PER_S,
    WHOLE_SECOND_KNOBS,
    Knob,
    check_input_field,
    effective_value,
    knob_range,
    with_knob,
)
from envs.sockshop import ENTRY_SERVICE, SERVICE_BY_NAME, SERVICES, Protocol

MeshConfig: TypeAlias = dict[str, ConnectionPool]
"""Service name → its DestinationRule connection pool. A service absent from it has no rule."""

#: The 12 services that receive traffic on the request path (complete-demo.yaml order).
TUNABLE_SERVICES: tuple[str, ...] = tuple(
    s.name for s in SERVICES if s.on_request_path and s.name != ENTRY_SERVICE)
#: The services a closed-loop controller tunes (MeshEnv v1's default): the request path and the
#: gateway → front-end pool, the admission point where shedding load under overload helps
#: (issue 12's held-out evaluation: a gateway throttle halves the loss of a ×4 load step).
CONTROL_SERVICES: tuple[str, ...] = tuple(
    s.name for s in SERVICES if s.on_request_path)
#: The notebook's 13 services: every service but front-end (queue-master included).
CLASSIC_SERVICES: tuple[str, ...] = tuple(s.name for s in SERVICES if s.name != ENTRY_SERVICE)

#: The six knobs the notebook randomises, in the order :func:`classic_initial_config` draws them.
CLASSIC_KNOBS: tuple[Knob, ...] = (
    Knob.MAX_CONNECTIONS, Knob.CONNECT_TIMEOUT_MS, Knob.HTTP1_MAX_PENDING_REQUESTS,
    Knob.HTTP2_MAX_REQUESTS, Knob.MAX_REQUESTS_PER_CONNECTION, Knob.MAX_RETRIES,
)
#: The knobs the extended catalogue adds to :data:`CLASSIC_KNOBS`.
EXTENDED_KNOBS: tuple[Knob, ...] = (
    Knob.KEEPALIVE_PROBES, Knob.KEEPALIVE_TIME_MS, Knob.KEEPALIVE_INTERVAL_MS,
    Knob.HTTP_IDLE_TIMEOUT_MS, Knob.USE_CLIENT_PROTOCOL,
)


class ActionKind(StrEnum):
    """How an action changes its knob."""

    ADD = "add"        # effective value + delta, clamped to knob_range
    TOGGLE = "toggle"  # a boolean knob becomes ``not effective``
    NOOP = "noop"      # nothing changes (global, no service)
    RUNG = "rung"      # the next rung of the knob's LADDERS up (delta +1) or down (delta -1)
    SET = "set"        # the knob set to one of its LADDERS rungs (delta = the rung's value)
    RESTORE = "restore"  # every tuned service's rule removed: Istio's defaults (global)
    RESET = "reset"    # one service's rule removed: Istio's defaults for that service


@dataclass(frozen=True)
class Action:
    """One action: move ``knob`` of ``service``'s pool.

    Attributes:
        service: the destination whose DestinationRule changes; None for the no-op.
        knob: the setting; None for the no-op.
        delta: for ADD, the change in the knob's unit (count, or ms for durations); else 0.
        kind: ADD, TOGGLE, RUNG, SET, RESET (the service's rule removed; no knob), or a
            global NOOP / RESTORE.
    """

    service: str | None
    knob: Knob | None
    delta: int = 0
    kind: ActionKind = ActionKind.ADD

    def __post_init__(self) -> None:
        if self.kind in GLOBAL_KINDS:
            if self.service is not None or self.knob is not None or self.delta != 0:
                raise ValueError(f"a {self.kind.value} action is global: no service, knob or "
                                 f"delta: {self}")
            return
        if self.service not in SERVICE_BY_NAME:
            raise ValueError(f"unknown service {self.service!r} in {self}")
        if self.kind is ActionKind.RESET:
            if self.knob is not None or self.delta != 0:
                raise ValueError(f"a reset action removes its service's whole rule: no knob or "
                                 f"delta: {self}")
            return
        if self.knob is None:
            raise ValueError(f"a {self.kind.value} action needs a knob: {self}")
        if self.kind is ActionKind.TOGGLE:
            if self.knob is not Knob.USE_CLIENT_PROTOCOL or self.delta != 0:
                raise ValueError(f"only useClientProtocol can be toggled, without delta: {self}")
        elif self.kind is ActionKind.RUNG:
            if self.knob not in LADDERS or self.delta not in (-1, 1):
                raise ValueError(f"a rung action moves a laddered knob by +1 or -1: {self}")
        elif self.kind is ActionKind.SET:
            if self.knob not in LADDERS or self.delta not in LADDERS[self.knob]:
                raise ValueError(f"a set action sets a laddered knob to one of its rungs: {self}")
        elif self.knob is Knob.USE_CLIENT_PROTOCOL or self.delta == 0:
            raise ValueError(f"an add action needs a numeric knob and a non-zero delta: {self}")
        elif self.knob in WHOLE_SECOND_KNOBS and self.delta % MS_PER_S:
            raise ValueError(f"{self.knob.value} moves in whole seconds; delta {self.delta} ms")

    @property
    def inert(self) -> bool:
        """True when Envoy ignores the knob for this service: an http.* knob on a TCP service.

        The no-op is not inert in this sense: it is a deliberate "leave things as they are".
        """
        if self.knob is None or self.service is None:
            return False
        return (self.knob.value.startswith("http.")
                and SERVICE_BY_NAME[self.service].protocol is Protocol.TCP)

    def apply_to(self, pool: ConnectionPool | None) -> ConnectionPool | None:
        """The pool after this action (pure). ``pool`` None means the service has no rule."""
        if self.kind is ActionKind.NOOP:
            return pool
        if self.kind in (ActionKind.RESTORE, ActionKind.RESET):
            return None
        assert self.service is not None and self.knob is not None  # checked in __post_init__
        check_input_field(self.service, pool, self.knob)
        if self.kind is ActionKind.TOGGLE:
            turned_on = not resolve(pool).use_client_protocol
            if turned_on and resolve(pool).h2_upgrade_policy is H2UpgradePolicy.UPGRADE:
                raise ValueError(
                    f"{self.service}: turning http.useClientProtocol on while "
                    "http.h2UpgradePolicy is UPGRADE makes a rule Istio rejects")
            return with_knob(pool, self.knob, turned_on)
        if self.kind is ActionKind.RUNG:
            return with_knob(pool, self.knob,
                             next_rung(self.knob, effective_value(pool, self.knob), self.delta))
        if self.kind is ActionKind.SET:
            return with_knob(pool, self.knob, self.delta)
        floor, ceiling = knob_range(self.knob)
        new_value = min(max(effective_value(pool, self.knob) + self.delta, floor), ceiling)
        return with_knob(pool, self.knob, new_value)

    def change_text(self) -> str:
        """The change alone, e.g. ``+20``, ``-50ms``, ``+300s``, ``toggle``, ``no-op``."""
        if self.kind is ActionKind.NOOP:
            return "no-op"
        if self.kind is ActionKind.RESTORE:
            return "restore Istio's defaults"
        if self.kind is ActionKind.RESET:
            return "reset to Istio's defaults"
        if self.kind is ActionKind.TOGGLE:
            return "toggle"
        if self.kind is ActionKind.RUNG:
            return "one rung up" if self.delta > 0 else "one rung down"
        if self.kind is ActionKind.SET:
            if self.delta == INT32_MAX:
                return "set unlimited"
            return f"set {self.delta}ms" if self.knob in DURATION_KNOBS else f"set {self.delta}"
        sign = "+" if self.delta > 0 else "-"
        size = abs(self.delta)
        if self.knob in WHOLE_SECOND_KNOBS:
            return f"{sign}{size // MS_PER_S}s"
        if self.knob in DURATION_KNOBS:
            return f"{sign}{size}ms"
        return f"{sign}{size}"


# One service's block of actions: (knob, delta in the knob's unit, kind); no knob for a reset.
_Template = tuple[Knob | None, int, ActionKind]
_CLASSIC_BLOCK: tuple[_Template, ...] = (
    (Knob.MAX_CONNECTIONS, +20, ActionKind.ADD),
    (Knob.MAX_CONNECTIONS, -5, ActionKind.ADD),
    (Knob.HTTP1_MAX_PENDING_REQUESTS, +40, ActionKind.ADD),
    (Knob.HTTP1_MAX_PENDING_REQUESTS, -10, ActionKind.ADD),
    (Knob.MAX_REQUESTS_PER_CONNECTION, +40, ActionKind.ADD),
    (Knob.MAX_REQUESTS_PER_CONNECTION, -10, ActionKind.ADD),
    (Knob.CONNECT_TIMEOUT_MS, +200, ActionKind.ADD),
    (Knob.CONNECT_TIMEOUT_MS, -50, ActionKind.ADD),
    (Knob.HTTP2_MAX_REQUESTS, +200, ActionKind.ADD),
    (Knob.HTTP2_MAX_REQUESTS, -50, ActionKind.ADD),
    (Knob.MAX_RETRIES, +40, ActionKind.ADD),
    (Knob.MAX_RETRIES, -10, ActionKind.ADD),
)
_EXTENDED_BLOCK: tuple[_Template, ...] = (
    *_CLASSIC_BLOCK,
    (Knob.KEEPALIVE_PROBES, +1, ActionKind.ADD),
    (Knob.KEEPALIVE_PROBES, -1, ActionKind.ADD),
    (Knob.KEEPALIVE_TIME_MS, +300 * MS_PER_S, ActionKind.ADD),
    (Knob.KEEPALIVE_TIME_MS, -300 * MS_PER_S, ActionKind.ADD),
    (Knob.KEEPALIVE_INTERVAL_MS, +15 * MS_PER_S, ActionKind.ADD),
    (Knob.KEEPALIVE_INTERVAL_MS, -15 * MS_PER_S, ActionKind.ADD),
    (Knob.HTTP_IDLE_TIMEOUT_MS, +60 * MS_PER_S, ActionKind.ADD),
    (Knob.HTTP_IDLE_TIMEOUT_MS, -60 * MS_PER_S, ActionKind.ADD),
    (Knob.USE_CLIENT_PROTOCOL, 0, ActionKind.TOGGLE),
)
#: The rungs of the ``ladder`` catalogue per knob (count, or ms), ending at the knob's effective
#: "unlimited" (INT32_MAX) where Istio's default is unlimited. Powers spaced so that a few steps
#: cross the range an operator uses: from Istio's unlimited default, front-end maxConnections 16
#: (a gateway throttle) is 6 steps down; 10 s connectTimeout to 100 ms is 2.
LADDERS: dict[Knob, tuple[int, ...]] = {
    Knob.MAX_CONNECTIONS: (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, INT32_MAX),
    Knob.HTTP1_MAX_PENDING_REQUESTS: (1, 4, 16, 64, 256, 1024, INT32_MAX),
    Knob.HTTP2_MAX_REQUESTS: (1, 4, 16, 64, 256, 1024, INT32_MAX),
    Knob.MAX_REQUESTS_PER_CONNECTION: (1, 10, 100, 1000, INT32_MAX),
    Knob.CONNECT_TIMEOUT_MS: (1, 10, 100, 1000, 10_000),
    Knob.MAX_RETRIES: (1, 2, 4, 16, 64, 256, INT32_MAX),
}


def next_rung(knob: Knob, value: int, direction: int) -> int:
    """The rung of ``LADDERS[knob]`` next to ``value`` in ``direction`` (+1: the smallest rung
    above it, -1: the largest below); ``value`` itself at the ladder's end. Works from any value
    (a random start between rungs moves to the nearest rung on that side)."""
    rungs = LADDERS[knob]
    if direction > 0:
        above = [r for r in rungs if r > value]
        return above[0] if above else value
    below = [r for r in rungs if r < value]
    return below[-1] if below else value


_LADDER_BLOCK: tuple[_Template, ...] = tuple(
    (knob, step, ActionKind.RUNG) for knob in CLASSIC_KNOBS for step in (+1, -1))
_SETPOINT_BLOCK: tuple[_Template, ...] = tuple(
    (knob, rung, ActionKind.SET) for knob in CLASSIC_KNOBS for rung in LADDERS[knob])
_SETPOINT_RESET_BLOCK: tuple[_Template, ...] = (*_SETPOINT_BLOCK, (None, 0, ActionKind.RESET))
CatalogueName = Literal["classic", "extended", "ladder", "setpoint", "setpoint_restore",
                        "setpoint_reset"]
_BLOCKS: dict[str, tuple[_Template, ...]] = {"classic": _CLASSIC_BLOCK, "extended": _EXTENDED_BLOCK,
                                             "ladder": _LADDER_BLOCK, "setpoint": _SETPOINT_BLOCK,
                                             "setpoint_restore": _SETPOINT_BLOCK,
                                             "setpoint_reset": _SETPOINT_RESET_BLOCK}
_KNOBS: dict[str, tuple[Knob, ...]] = {"classic": CLASSIC_KNOBS,
                                       "extended": CLASSIC_KNOBS + EXTENDED_KNOBS,
                                       "ladder": CLASSIC_KNOBS, "setpoint": CLASSIC_KNOBS,
                                       "setpoint_restore": CLASSIC_KNOBS,
                                       "setpoint_reset": CLASSIC_KNOBS}
#: Each catalogue's services when none are given.
DEFAULT_SERVICES: dict[str, tuple[str, ...]] = {
    "classic": TUNABLE_SERVICES, "extended": TUNABLE_SERVICES, "ladder": CONTROL_SERVICES,
    "setpoint": CONTROL_SERVICES, "setpoint_restore": CONTROL_SERVICES,
    "setpoint_reset": CONTROL_SERVICES}
#: The catalogue names :func:`make_catalogue` accepts.
CATALOGUE_NAMES: tuple[str, ...] = tuple(_BLOCKS)

#: The kinds of action that act on no one service.
GLOBAL_KINDS: frozenset[ActionKind] = frozenset({ActionKind.NOOP, ActionKind.RESTORE})
_NOOP = Action(None, None, 0, ActionKind.NOOP)
_RESTORE = Action(None, None, 0, ActionKind.RESTORE)
#: Each catalogue's global actions, after the services' blocks (the no-op, when there, last).
_GLOBALS: dict[str, tuple[Action, ...]] = {
    "classic": (), "extended": (_NOOP,), "ladder": (_NOOP,), "setpoint": (_NOOP,),
    "setpoint_restore": (_RESTORE, _NOOP), "setpoint_reset": (_NOOP,)}


def check_services(services: Sequence[str]) -> tuple[str, ...]:
    """``services`` as a tuple, after checking each is a SockShop service, once.

    Raises:
        ValueError: unknown or repeated service names, or an empty list.
        TypeError: a single string instead of a sequence of names.
    """
    if isinstance(services, str):
        raise TypeError(f"services must be a sequence of names, not the string {services!r}")
    names = tuple(services)
    if not names:
        raise ValueError("services must name at least one SockShop service")
    unknown = [n for n in names if n not in SERVICE_BY_NAME]
    if unknown:
        raise ValueError(f"unknown service(s) {unknown}; SockShop has {list(SERVICE_BY_NAME)}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"service(s) listed more than once: {repeated}")
    return names


@dataclass(frozen=True)
class ActionCatalogue:
    """A numbered set of actions over some services.

    Attributes:
        name: one of :data:`CATALOGUE_NAMES`.
        services: the tunable services, in index order.
        actions: every action; ``index = service_index × actions_per_service + act``, then the
            global actions (``setpoint_restore``: restore, then the no-op; every other
            catalogue but ``classic``: the no-op), the no-op last.
        knobs: the knobs the catalogue moves (for observations), in a fixed order.
        actions_per_service: the size of one service's block.
    """

    name: str
    services: tuple[str, ...]
    actions: tuple[Action, ...]
    knobs: tuple[Knob, ...]
    actions_per_service: int

    def __len__(self) -> int:
        return len(self.actions)

    def action(self, index: int) -> Action:
        """The action at ``index`` (any integer type, e.g. numpy's).

        Raises:
            ValueError: ``index`` outside ``0 .. len(self) - 1``.
            TypeError: ``index`` is not an integer.
        """
        if isinstance(index, bool):
            raise TypeError(f"action index must be an integer, got {index!r}")
        i = operator.index(index)
        if not 0 <= i < len(self.actions):
            raise ValueError(f"action index {i} out of range for the {self.name!r} catalogue "
                             f"of {len(self.actions)} actions")
        return self.actions[i]

    def apply(self, index: int, config: Mapping[str, ConnectionPool]) -> dict[str, ConnectionPool]:
        """A new configuration: ``config`` with action ``index`` applied (``config`` untouched).

        Services absent from ``config`` have no rule; an action on one creates a pool holding
        only the knob it moves. Services outside the catalogue are carried over unchanged.
        """
        action = self.action(index)
        new_config = dict(config)
        for service, pool in new_config.items():
            if not isinstance(pool, ConnectionPool):
                raise TypeError(f"config[{service!r}] must be a ConnectionPool, "
                                f"got {type(pool).__name__}")
        if action.kind is ActionKind.RESTORE:
            for service in self.services:
                new_config.pop(service, None)
        elif action.kind is ActionKind.RESET:
            assert action.service is not None  # checked in __post_init__
            new_config.pop(action.service, None)
        elif action.service is not None:
            pool = action.apply_to(new_config.get(action.service))
            assert pool is not None  # only the no-op returns its input, which may be None
            new_config[action.service] = pool
        return new_config

    def describe(self, index: int) -> str:
        """A one-line description, e.g. ``carts: tcp.maxConnections +20``."""
        action = self.action(index)
        if action.kind is ActionKind.NOOP:
            return "no-op (configuration unchanged)"
        if action.kind is ActionKind.RESTORE:
            return "restore Istio's defaults (every tuned service's DestinationRule removed)"
        if action.kind is ActionKind.RESET:
            return f"{action.service}: reset to Istio's defaults (its DestinationRule removed)"
        assert action.knob is not None
        return f"{action.service}: {action.knob.value} {action.change_text()}"

    def index_of(self, action: Action) -> int:
        """The index of ``action``; ValueError if the catalogue does not contain it."""
        try:
            return self.actions.index(action)
        except ValueError:
            raise ValueError(f"{action} is not in the {self.name!r} catalogue") from None

    @property
    def global_actions(self) -> int:
        """How many global actions (restore, no-op) follow the services' blocks."""
        return len(self.actions) - len(self.services) * self.actions_per_service

    @property
    def noop_index(self) -> int | None:
        """The global no-op's index (the last one), or None when the catalogue has none."""
        return self.index_of(_NOOP) if _NOOP in self.actions else None

    def inert_indices(self) -> tuple[int, ...]:
        """Indices of actions Envoy ignores: http.* knobs of TCP-only services (see module doc)."""
        return tuple(i for i, a in enumerate(self.actions) if a.inert)


def make_catalogue(name: CatalogueName = "classic",
                   services: Sequence[str] | None = None) -> ActionCatalogue:
    """The catalogue ``name`` (:data:`CATALOGUE_NAMES`) over ``services`` (default: the
    catalogue's own, :data:`DEFAULT_SERVICES`: :data:`TUNABLE_SERVICES` for the additive
    catalogues, :data:`CONTROL_SERVICES` — the front-end's gateway pool too — for ``ladder``,
    ``setpoint``, ``setpoint_restore`` and ``setpoint_reset``).

    Raises:
        ValueError: an unknown catalogue name, or unknown / repeated services.
    """
    if name not in _BLOCKS:
        raise ValueError(f"unknown action catalogue {name!r}; choose one of {CATALOGUE_NAMES}")
    names = check_services(DEFAULT_SERVICES[name] if services is None else services)
    block = _BLOCKS[name]
    actions = [Action(service, knob, delta, kind)
               for service in names for knob, delta, kind in block]
    actions += _GLOBALS[name]
    return ActionCatalogue(name=name, services=names, actions=tuple(actions),
                           knobs=_KNOBS[name], actions_per_service=len(block))


def render_action_table(name: CatalogueName) -> str:
    """The per-service action table of catalogue ``name`` as markdown (as in the module doc)."""
    catalogue = make_catalogue(name, services=TUNABLE_SERVICES[:1])
    lines = ["| act | knob | change |", "|---:|---|---|"]
    for act, action in enumerate(catalogue.actions):
        if action.kind is ActionKind.NOOP:
            lines.append("| last | (none) | no-op |")
        elif action.kind is ActionKind.RESTORE:
            lines.append("| S × A | (every tuned service's rule) | restore Istio's defaults |")
        elif action.kind is ActionKind.RESET:
            lines.append(f"| {act} | (the service's whole rule) | reset to Istio's defaults |")
        else:
            assert action.knob is not None
            lines.append(f"| {act} | {action.knob.value} | {action.change_text()} |")
    return "\n".join(lines)


def classic_initial_config(rng: np.random.Generator,
                        services: Sequence[str] = TUNABLE_SERVICES,
                        upper: int = 100) -> MeshConfig:
    """The notebook's random initial configuration: every :data:`CLASSIC_KNOBS` of every service
    drawn uniformly from ``1..upper`` (connectTimeout in ms).

    One draw ``rng.integers(1, upper, size=(len(services), 6), endpoint=True)``: row = service
    in the given order, column = :data:`CLASSIC_KNOBS` order. The same generator state gives the
    same configuration.

    Raises:
        TypeError: ``rng`` is not a ``numpy.random.Generator``.
        ValueError: unknown services, or ``upper`` outside 1..INT32_MAX.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError("rng must be a numpy.random.Generator (numpy.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")
    names = check_services(services)
    if isinstance(upper, bool) or not 1 <= operator.index(upper) <= INT32_MAX:
        raise ValueError(f"upper must be an integer in 1..{INT32_MAX}, got {upper!r}")
    draws = rng.integers(1, upper, size=(len(names), len(CLASSIC_KNOBS)), endpoint=True)
    config: MeshConfig = {}
    for service, row in zip(names, draws, strict=True):
        pool = ConnectionPool()
        for knob, value in zip(CLASSIC_KNOBS, row, strict=True):
            pool = with_knob(pool, knob, int(value))
        config[service] = pool
    return config


def istio_default_config() -> MeshConfig:
    """No DestinationRules at all: Istio's defaults everywhere (a fresh empty mapping)."""
    return {}
