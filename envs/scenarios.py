"""Episodes as data: a :class:`Scenario` is what one ``MeshEnv`` episode replays.

A scenario fixes, for every load run of an episode, the **offered open-loop rate** (requests/s;
run 0 is the reset run, then one run per step, so ``len(rates) == episode_len + 1``), the
**faults** active during that run (:class:`FaultWindow`: a service down, or its service times
multiplied by ``factor``, for the runs ``start_step <= t < end_step``), and the **starting
configuration** (``istio_default``: no DestinationRule; ``classic_random``: the notebook's random
draw; ``tuned``: a tuned configuration the env supplies — the scenario only names it). The env
turns run ``t`` into a backend load with :meth:`Scenario.load`.

Scenarios come from **families** (:class:`Family`: a load shape, optionally a fault, each
parameter drawn from a range with a seeded ``numpy`` generator) grouped into two
**distributions**: :data:`TRAINING` (what training episodes draw from, :func:`draw`) and
:data:`HELD_OUT` (kept for evaluation only, :func:`held_out_cases`). Rates are multiples of
:data:`envs.sockshop.slo.NOMINAL_RATE_RPS` (60 req/s; the simulated shop serves about 108 req/s
with Istio's defaults, so ×1.8 already saturates it). Scenarios are also plain data: YAML lists
(:func:`load_scenarios`, :func:`save_scenarios`), :meth:`Scenario.to_dict` /
:meth:`Scenario.from_dict`.

Families (rates × 60 req/s; ``T`` = episode_len; ranges uniform, inclusive)
--------------------------------------------------------------------------------

| distribution | family | load | fault |
|---|---|---|---|
| training | ``steady`` | constant, 0.5–1.75 | — |
| training | ``ramp`` | linear run 0 → run T, ends in 0.5–2.0, ≥ 0.5 apart, up or down | — |
| training | ``step_up`` | base 0.5–1.0, ×k (k 2–3) from a step in 2..T-1 on | — |
| training | ``step_down`` | base 1.5–2.5, ÷k (k 2–3) from a step in 2..T-1 on | — |
| training | ``diurnal`` | mean 0.75–1.25 ± 30–60 %, **one** sine period, random phase | — |
| training | ``fault_down`` | steady 0.5–1.25 | down: carts-db, orders or payment |
| training | ``fault_slow`` | steady 0.5–1.25 | slow ×4–×10: catalogue, orders or payment |
| training | ``shift_fault`` | ``step_up``, ``step_down`` or ``ramp`` | down or slow, as above |
| training (weight 2) | ``overload`` | constant, 1.8–3.0 (above what Istio's defaults serve) | — |
| held out | ``step_up_x4`` | base 0.5–1.0, ×k (k **3.5–4.5**) | — |
| held out | ``step_down_x4`` | base 2.0–3.0, ÷k (k **3.5–4.5**) | — |
| held out | ``diurnal_2p`` | as ``diurnal`` but **two** periods over the episode | — |
| held out | ``fault_down_unseen`` | steady 0.5–1.25 | down: **carts, orders-db or shipping** |
| held out | ``fault_slow_unseen`` | steady 0.5–1.25 | slow ×4–×10: **carts, user or shipping** |
| held out | ``shift_fault_unseen`` | as ``shift_fault`` | down or slow, as above |

Every fault window lasts 2–6 runs (capped at T-1), starts at run 1 or later (the reset run is
clean) and ends by run T (the last run is clean: the episode shows the recovery). Every family
has weight 1 but ``overload`` (2); the start is ``istio_default``, ``classic_random`` or
``tuned`` with equal probability (:func:`held_out_cases` cycles through families, then starts,
for balance).

What keeps held-out scenarios out of training (``tests/envs/test_scenarios.py`` checks it over
thousands of training draws):

* **services**: training faults only carts-db, catalogue, orders, payment; held-out faults only
  carts, orders-db, shipping, user — no service is faulted in both;
* **step size**: the largest ratio between consecutive runs' rates is ≤ 3 in every training draw
  (steps ×2–×3; ramps and diurnal curves change by less per step) and ≥ 3.5 in ``*_x4``;
* **period**: the rate sequence of a training draw changes direction at most twice (monotone
  shapes; one sine period); ``diurnal_2p`` changes direction at least three times.

Which services are faulted, and why
-----------------------------------
A :class:`FaultWindow` may name any of :data:`FAULTABLE_SERVICES` = ``envs.actions``'
``TUNABLE_SERVICES`` (the 12 services on the request path, databases included); front-end (a
fault there is the whole shop) and queue-master (no request reaches it) are rejected. The
families draw from fewer, those whose fault leaves something for a connection pool to save.
Measured on the simulator (as of commit 7489b09, before open-loop sessions give up on a failed
``GET /catalogue``), Istio's defaults, open load 60 req/s, 1,600 requests, seed 1
(``SimMesh().run_load(LoadSpec(0, 1600, "open", 60.0, faults=(ServiceDown(s, 0, 1e6),)), 1)``):

* down: carts and carts-db fail 33 % of requests; orders, orders-db, payment, shipping 11 %
  (``POST /orders``) — drawn, split 3/3 between training and held out; session-db, user and
  user-db fail 96–100 % (nothing to save) and catalogue, catalogue-db and rabbitmq 0–1 % (their
  callers mask the outage) — not drawn;
* slow ×10: carts, catalogue, user and orders raise the mean latency from 66 ms to 440–3,460 ms;
  shipping and payment by 3–25 ms; every database by < 8 ms (negligible service times) — the
  four strong ones split 2/2, shipping and payment 1/1.

Whole-run faults
----------------
:meth:`Scenario.load` gives a fault active at run ``t`` the window [0, :data:`RUN_FAULT_END_S`)
seconds of the run: 10⁶ s (11.6 days). A run lasts about ``requests / rate`` ≈ ``step_s``
seconds plus its backlog (at ×4.5 overload ~4.5 × ``step_s``; the local load generator stops
any run at 300 s), so the window certainly covers the run, while staying finite: backends
validate ``0 <= start_s < end_s`` and schedule the end, and results files stay valid JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import yaml

from envs.actions import TUNABLE_SERVICES
from envs.backends.base import Fault, LatencySpike, LoadSpec, ServiceDown
from envs.sockshop import SERVICE_NAMES
from envs.sockshop.slo import NOMINAL_RATE_RPS

FaultKind = Literal["down", "slow"]
StartKind = Literal["istio_default", "classic_random", "tuned"]
LoadKind = Literal["steady", "ramp", "step_up", "step_down", "diurnal"]

#: The fault kinds: a service refusing every connection, or its service times × factor.
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
#: The starting configurations a scenario can name.
STARTS: tuple[str, ...] = get_args(StartKind)
#: The load shapes of the families.
LOAD_KINDS: tuple[str, ...] = get_args(LoadKind)
#: Services a FaultWindow may name: the 12 on the request path (module docstring).
FAULTABLE_SERVICES: tuple[str, ...] = TUNABLE_SERVICES

#: Services the training families take down / slow down.
TRAIN_DOWN_SERVICES: tuple[str, ...] = ("carts-db", "orders", "payment")
TRAIN_SLOW_SERVICES: tuple[str, ...] = ("catalogue", "orders", "payment")
#: Services only the held-out families take down / slow down (never faulted in training).
HELD_OUT_DOWN_SERVICES: tuple[str, ...] = ("carts", "orders-db", "shipping")
HELD_OUT_SLOW_SERVICES: tuple[str, ...] = ("carts", "user", "shipping")

#: End of a whole-run fault window, seconds of the run (module docstring: why this value).
RUN_FAULT_END_S = 1e6
#: The shortest episode the families draw for (two sine periods need ~8 steps to show).
MIN_EPISODE_LEN = 8

_FAULT_KEYS = ("kind", "service", "start_step", "end_step", "factor")
_SCENARIO_KEYS = ("name", "family", "start", "rates", "faults")


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


@dataclass(frozen=True)
class FaultWindow:
    """A fault during the runs ``start_step <= t < end_step`` of an episode (run 0 = reset).

    Attributes:
        kind: ``down`` (the service refuses every connection) or ``slow`` (its service times
            are multiplied by ``factor``).
        service: one of :data:`FAULTABLE_SERVICES`.
        start_step: first run the fault is active in (0 = the reset run).
        end_step: first run it is no longer active in (exclusive).
        factor: ``slow`` only, > 1 (service times × factor); ``down`` keeps 1.0.
    """

    kind: FaultKind
    service: str
    start_step: int
    end_step: int
    factor: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"FaultWindow.kind must be one of {FAULT_KINDS}, got {self.kind!r}")
        if self.service not in SERVICE_NAMES:
            raise ValueError(f"FaultWindow.service: unknown service {self.service!r} "
                             f"(SockShop's services: {', '.join(SERVICE_NAMES)})")
        if self.service not in FAULTABLE_SERVICES:
            raise ValueError(f"FaultWindow.service: {self.service!r} cannot be faulted (faultable: "
                             f"{', '.join(FAULTABLE_SERVICES)}; front-end is the whole shop, "
                             "queue-master gets no request)")
        if not _is_int(self.start_step) or self.start_step < 0:
            raise ValueError(f"FaultWindow.start_step must be an int >= 0, got {self.start_step!r}")
        if not _is_int(self.end_step) or self.end_step <= self.start_step:
            raise ValueError(f"FaultWindow.end_step must be an int > start_step "
                             f"({self.start_step}), got {self.end_step!r}")
        if not _is_real(self.factor) or not math.isfinite(self.factor):
            raise ValueError(f"FaultWindow.factor must be a finite number, got {self.factor!r}")
        if self.kind == "slow" and self.factor <= 1:
            raise ValueError(f"FaultWindow.factor must be > 1 for a slow fault, got {self.factor}")
        if self.kind == "down" and self.factor != 1:
            raise ValueError(f"FaultWindow.factor must be 1 for a down fault, got {self.factor}")
        object.__setattr__(self, "start_step", int(self.start_step))
        object.__setattr__(self, "end_step", int(self.end_step))
        object.__setattr__(self, "factor", float(self.factor))

    def active(self, t: int) -> bool:
        """Whether the fault is active during run ``t``."""
        return self.start_step <= t < self.end_step

    def run_fault(self) -> Fault:
        """The backend fault covering a whole run (window [0, :data:`RUN_FAULT_END_S`) s)."""
        if self.kind == "down":
            return ServiceDown(self.service, 0.0, RUN_FAULT_END_S)
        return LatencySpike(self.service, 0.0, RUN_FAULT_END_S, self.factor)

    def describe(self) -> str:
        """``carts down t3-5`` / ``catalogue x8 t2-7`` (runs, inclusive)."""
        what = "down" if self.kind == "down" else f"x{self.factor:g}"
        return f"{self.service} {what} t{self.start_step}-{self.end_step - 1}"

    def to_dict(self) -> dict[str, Any]:
        """Plain data (YAML/JSON); ``factor`` only for slow faults."""
        data: dict[str, Any] = {"kind": self.kind, "service": self.service,
                                "start_step": self.start_step, "end_step": self.end_step}
        if self.kind == "slow":
            data["factor"] = self.factor
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultWindow:
        """The inverse of :meth:`to_dict`; ValueError naming the field on bad data."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a fault must be a mapping with keys {_FAULT_KEYS}, got {data!r}")
        unknown = sorted(set(data) - set(_FAULT_KEYS), key=str)
        if unknown:
            raise ValueError(f"FaultWindow: unknown field(s) {unknown} (known: {_FAULT_KEYS})")
        missing = [k for k in _FAULT_KEYS[:4] if k not in data]
        if missing:
            raise ValueError(f"FaultWindow: missing field(s) {missing}")
        return cls(**dict(data))


@dataclass(frozen=True)
class Scenario:
    """One episode: the offered rate and active faults of each run, and the start.

    Attributes:
        name: identifier, for tables and files.
        family: the family it was drawn from (or any label for a hand-written one).
        rates: offered open-loop rate of each run, requests/s; index 0 is the reset run, then
            one per step (``len(rates) == episode_len + 1``); each finite and > 0.
        faults: fault windows, each within the episode's runs (``end_step <= len(rates)``).
        start: ``istio_default``, ``classic_random`` or ``tuned`` (module docstring).
    """

    name: str
    family: str
    rates: tuple[float, ...]
    faults: tuple[FaultWindow, ...] = ()
    start: StartKind = "istio_default"

    def __post_init__(self) -> None:
        for key in ("name", "family"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value.strip() or "\n" in value:
                raise ValueError(f"Scenario.{key} must be a non-empty one-line string, "
                                 f"got {value!r}")
        if isinstance(self.rates, np.ndarray):
            object.__setattr__(self, "rates", tuple(self.rates.tolist()))
        if isinstance(self.rates, str | Mapping) or not isinstance(self.rates, Sequence):
            raise ValueError(f"Scenario.rates must be a list of numbers, got {self.rates!r}")
        if len(self.rates) < 2:
            raise ValueError("Scenario.rates needs the reset run and at least one step "
                             f"(>= 2 values), got {len(self.rates)}")
        for t, rate in enumerate(self.rates):
            if not _is_real(rate) or not math.isfinite(rate) or rate <= 0:
                raise ValueError(f"Scenario.rates[{t}] must be a finite number > 0 (req/s), "
                                 f"got {rate!r}")
        object.__setattr__(self, "rates", tuple(float(r) for r in self.rates))
        if isinstance(self.faults, str | Mapping) or not isinstance(self.faults, Sequence):
            raise ValueError(f"Scenario.faults must be a list of FaultWindow, got {self.faults!r}")
        for i, fault in enumerate(self.faults):
            if not isinstance(fault, FaultWindow):
                raise ValueError(f"Scenario.faults[{i}] must be a FaultWindow, got {fault!r}")
            if fault.end_step > len(self.rates):
                raise ValueError(f"Scenario.faults[{i}] ({fault.describe()}) ends at run "
                                 f"{fault.end_step}, after the episode's last run "
                                 f"{len(self.rates) - 1}")
        object.__setattr__(self, "faults", tuple(self.faults))
        if self.start not in STARTS:
            raise ValueError(f"Scenario.start must be one of {STARTS}, got {self.start!r}")

    @property
    def episode_len(self) -> int:
        """Steps of the episode (runs after the reset run)."""
        return len(self.rates) - 1

    def faults_at(self, t: int) -> tuple[FaultWindow, ...]:
        """The fault windows active during run ``t``."""
        self._check_run(t)
        return tuple(f for f in self.faults if f.active(t))

    def load(self, t: int, step_s: float) -> LoadSpec:
        """The open load of run ``t`` (0 = reset run): ``rates[t]`` req/s for about ``step_s``
        seconds (``max(1, round(rates[t] * step_s))`` requests), with the faults active at
        ``t`` covering the whole run (:meth:`FaultWindow.run_fault`)."""
        self._check_run(t)
        if not _is_real(step_s) or not math.isfinite(step_s) or step_s <= 0:
            raise ValueError(f"step_s must be a finite number of seconds > 0, got {step_s!r}")
        rate = self.rates[t]
        return LoadSpec(users=0, requests=max(1, round(rate * step_s)), mode="open",
                        arrival_rate_rps=rate,
                        faults=tuple(f.run_fault() for f in self.faults_at(t)))

    def describe(self) -> str:
        """One line for tables: name (and family unless the name says it), start, rates, faults."""
        lo, hi = min(self.rates), max(self.rates)
        rate = f"{lo:.0f} rps" if math.isclose(lo, hi) else f"{lo:.0f}-{hi:.0f} rps"
        faults = ", ".join(f.describe() for f in self.faults) or "no fault"
        family = "" if self.family in self.name else f" [{self.family}]"
        return (f"{self.name}{family}: start={self.start}, {self.episode_len} steps, "
                f"{rate} ({self.rates[0]:.0f} -> {self.rates[-1]:.0f}), {faults}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data (YAML/JSON): the inverse of :meth:`from_dict`."""
        return {"name": self.name, "family": self.family, "start": self.start,
                "rates": list(self.rates), "faults": [f.to_dict() for f in self.faults]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scenario:
        """A scenario from plain data; ValueError naming the field on bad data."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a scenario must be a mapping with keys {_SCENARIO_KEYS}, "
                             f"got {type(data).__name__}")
        unknown = sorted(set(data) - set(_SCENARIO_KEYS), key=str)
        if unknown:
            raise ValueError(f"Scenario: unknown field(s) {unknown} (known: {_SCENARIO_KEYS})")
        missing = [k for k in ("name", "family", "rates") if k not in data]
        if missing:
            raise ValueError(f"Scenario: missing field(s) {missing}")
        faults = data.get("faults") or []
        if isinstance(faults, str | Mapping) or not isinstance(faults, Sequence):
            raise ValueError(f"Scenario.faults must be a list, got {faults!r}")
        windows = []
        for i, f in enumerate(faults):
            try:
                windows.append(FaultWindow.from_dict(f))
            except ValueError as err:
                raise ValueError(f"Scenario.faults[{i}]: {err}") from None
        return cls(name=data["name"], family=data["family"], rates=data["rates"],
                   faults=tuple(windows), start=data.get("start", "istio_default"))

    def _check_run(self, t: int) -> None:
        if not _is_int(t) or not 0 <= t <= self.episode_len:
            raise ValueError(f"run index t must be an int in 0..{self.episode_len}, got {t!r}")


# --- builders: the shapes, with explicit parameters ---------------------------------------------

def steady(rate: float, episode_len: int, start: StartKind = "istio_default",
           name: str | None = None) -> Scenario:
    """The classic steady case: ``rate`` req/s in every run, no fault."""
    _check_len(episode_len, 1)
    return Scenario(name or f"steady {rate:g}rps", "steady", (rate,) * (episode_len + 1),
                    (), start)


def ramp_rates(rate_from: float, rate_to: float, episode_len: int) -> tuple[float, ...]:
    """Rates rising (or falling) linearly from ``rate_from`` at run 0 to ``rate_to`` at the last."""
    _check_len(episode_len, 1)
    return tuple(float(r) for r in np.linspace(rate_from, rate_to, episode_len + 1))


def step_rates(base: float, factor: float, at: int, episode_len: int) -> tuple[float, ...]:
    """``base`` req/s in runs ``0..at-1``, ``base * factor`` from run ``at`` on (a factor < 1 is
    a step down)."""
    _check_len(episode_len, 1)
    if not 1 <= at <= episode_len:
        raise ValueError(f"step at must be in 1..{episode_len}, got {at}")
    return tuple(base if t < at else base * factor for t in range(episode_len + 1))


def diurnal_rates(mean: float, amplitude: float, periods: int, phase: float,
                  episode_len: int) -> tuple[float, ...]:
    """``mean * (1 + amplitude * sin(2π periods t / episode_len + phase))`` for runs
    ``t = 0..episode_len``: ``periods`` full sine periods over the episode (0 <= amplitude < 1)."""
    _check_len(episode_len, 1)
    if not 0 <= amplitude < 1:
        raise ValueError(f"diurnal amplitude must be in [0, 1), got {amplitude}")
    t = np.arange(episode_len + 1)
    return tuple(float(r) for r in
                 mean * (1 + amplitude * np.sin(2 * np.pi * periods * t / episode_len + phase)))


def _check_len(episode_len: int, low: int) -> None:
    if not _is_int(episode_len) or episode_len < low:
        raise ValueError(f"episode_len must be an int >= {low}, got {episode_len!r}")


# --- families and distributions -----------------------------------------------------------------

Range = tuple[float, float]


@dataclass(frozen=True)
class LoadShape:
    """How a family's rates are drawn (rates as multiples of ``NOMINAL_RATE_RPS``).

    Attributes:
        kind: ``steady`` (rate), ``ramp`` (two ends in ``rate``, at least ``min_change``
            apart, up or down), ``step_up`` / ``step_down`` (base ``rate``, × or ÷ ``factor``
            from a step in 2..T-1), ``diurnal`` (mean ``rate``, relative ``amplitude``,
            ``periods`` sine periods over the episode, random phase).
        rate: range of the rate / base / ramp ends / diurnal mean, × nominal.
        factor: range of the step factor k (>= 1).
        min_change: ramp only: least difference between its ends, × nominal.
        amplitude: diurnal only: range of the relative amplitude, in [0, 1).
        periods: diurnal only: sine periods over the episode.
    """

    kind: LoadKind
    rate: Range
    factor: Range = (2.0, 3.0)
    min_change: float = 0.5
    amplitude: Range = (0.3, 0.6)
    periods: int = 1

    def sample(self, rng: np.random.Generator, episode_len: int) -> tuple[tuple[float, ...], str]:
        """Draw the rates (req/s) and a short label of the drawn parameters."""
        n = NOMINAL_RATE_RPS
        if self.kind == "steady":
            rate = round(rng.uniform(*self.rate) * n, 1)
            return (rate,) * (episode_len + 1), f"{rate:g}rps"
        if self.kind == "ramp":
            lo, hi = self.rate
            low = rng.uniform(lo, hi - self.min_change)
            high = rng.uniform(low + self.min_change, hi)
            a, b = round(low * n, 1), round(high * n, 1)
            if rng.random() < 0.5:
                a, b = b, a
            return ramp_rates(a, b, episode_len), f"{a:g}->{b:g}rps"
        if self.kind in ("step_up", "step_down"):
            base = round(rng.uniform(*self.rate) * n, 1)
            k = round(rng.uniform(*self.factor), 2)
            at = int(rng.integers(2, episode_len))  # 2..T-1
            factor = k if self.kind == "step_up" else 1 / k
            sign = "x" if self.kind == "step_up" else "/"
            return step_rates(base, factor, at, episode_len), f"{base:g}rps{sign}{k:g}@t{at}"
        if self.kind == "diurnal":
            mean = round(rng.uniform(*self.rate) * n, 1)
            amp = round(rng.uniform(*self.amplitude), 2)
            phase = round(rng.uniform(0, 2 * np.pi), 3)
            return (diurnal_rates(mean, amp, self.periods, phase, episode_len),
                    f"{mean:g}rps+-{amp * 100:.0f}% {self.periods}p ph{phase:g}")
        raise ValueError(f"LoadShape.kind must be one of {LOAD_KINDS}, got {self.kind!r}")


@dataclass(frozen=True)
class FaultShape:
    """How a family's fault window is drawn.

    Attributes:
        kinds: fault kinds, one drawn uniformly.
        down_services / slow_services: the services a down / slow fault picks from (uniformly).
        duration: range of the window's length in runs (inclusive; capped at T-1); the window
            starts at run 1 or later and ends by run T.
        factor: slow only: range of the service-time factor.
    """

    kinds: tuple[FaultKind, ...]
    down_services: tuple[str, ...]
    slow_services: tuple[str, ...]
    duration: tuple[int, int] = (2, 6)
    factor: Range = (4.0, 10.0)

    def sample(self, rng: np.random.Generator, episode_len: int) -> FaultWindow:
        """Draw one fault window within runs 1..T."""
        kind = str(rng.choice(self.kinds))
        services = self.down_services if kind == "down" else self.slow_services
        service = str(rng.choice(services))
        longest = min(self.duration[1], episode_len - 1)
        shortest = min(self.duration[0], longest)
        length = int(rng.integers(shortest, longest + 1))
        start = int(rng.integers(1, episode_len - length + 1))
        factor = round(float(rng.uniform(*self.factor)), 1) if kind == "slow" else 1.0
        return FaultWindow(kind, service, start, start + length, factor)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Family:
    """A seeded generator of scenarios: one of ``loads`` (uniformly), and a fault if any."""

    name: str
    loads: tuple[LoadShape, ...]
    fault: FaultShape | None = None

    def sample(self, rng: np.random.Generator, episode_len: int,
               start: StartKind = "istio_default") -> Scenario:
        """Draw one scenario of ``episode_len`` steps (>= :data:`MIN_EPISODE_LEN`)."""
        _check_len(episode_len, MIN_EPISODE_LEN)
        shape = self.loads[int(rng.integers(len(self.loads)))]
        rates, label = shape.sample(rng, episode_len)
        if len(self.loads) > 1:
            label = f"{shape.kind} {label}"
        faults: tuple[FaultWindow, ...] = ()
        if self.fault is not None:
            faults = (self.fault.sample(rng, episode_len),)
            label += " " + faults[0].describe().replace(" ", "_")
        return Scenario(f"{self.name} {label}", self.name, rates, faults, start)


@dataclass(frozen=True)
class Distribution:
    """A weighted mixture of families and of starting configurations."""

    name: str
    families: tuple[tuple[Family, float], ...]
    starts: tuple[tuple[StartKind, float], ...] = (
        ("istio_default", 1.0), ("classic_random", 1.0), ("tuned", 1.0))

    def family(self, name: str) -> Family:
        """The family called ``name`` (ValueError if none)."""
        for fam, _ in self.families:
            if fam.name == name:
                return fam
        raise ValueError(f"distribution {self.name!r} has no family {name!r}")


_STEADY_BASE = LoadShape("steady", (0.5, 1.25))
_STEP_UP = LoadShape("step_up", (0.5, 1.0), factor=(2.0, 3.0))
_STEP_DOWN = LoadShape("step_down", (1.5, 2.5), factor=(2.0, 3.0))
_RAMP = LoadShape("ramp", (0.5, 2.0), min_change=0.5)
_TRAIN_FAULT = FaultShape(("down", "slow"), TRAIN_DOWN_SERVICES, TRAIN_SLOW_SERVICES)
_HELD_OUT_FAULT = FaultShape(("down", "slow"), HELD_OUT_DOWN_SERVICES, HELD_OUT_SLOW_SERVICES)

#: The ``overload`` family's weight among the training families (the others' is 1): a fifth of
#: the training episodes offer a steady 1.8–3 × nominal. Without it, 12 % of the training steps
#: are overloaded, and in 3 of 5 seeds the policy settled on inert actions before it drew the one
#: action that pays there (the front-end's ``http2MaxRequests`` 16, 1 of 547); with it, 4 of 5
#: seeds learn it (BENCHMARKS.md, Closed-loop evaluation: the training choices).
OVERLOAD_WEIGHT = 2.0

#: What training episodes draw from (module docstring: the table).
TRAINING = Distribution("training", (
    (Family("steady", (LoadShape("steady", (0.5, 1.75)),)), 1.0),
    (Family("ramp", (_RAMP,)), 1.0),
    (Family("step_up", (_STEP_UP,)), 1.0),
    (Family("step_down", (_STEP_DOWN,)), 1.0),
    (Family("diurnal", (LoadShape("diurnal", (0.75, 1.25), amplitude=(0.3, 0.6)),)), 1.0),
    (Family("fault_down", (_STEADY_BASE,), replace(_TRAIN_FAULT, kinds=("down",))), 1.0),
    (Family("fault_slow", (_STEADY_BASE,), replace(_TRAIN_FAULT, kinds=("slow",))), 1.0),
    (Family("shift_fault", (_STEP_UP, _STEP_DOWN, _RAMP), _TRAIN_FAULT), 1.0),
    (Family("overload", (LoadShape("steady", (1.8, 3.0)),)), OVERLOAD_WEIGHT),
))

#: Evaluation only: larger steps, a faster cycle, faults of services training never faults.
HELD_OUT = Distribution("held_out", (
    (Family("step_up_x4", (LoadShape("step_up", (0.5, 1.0), factor=(3.5, 4.5)),)), 1.0),
    (Family("step_down_x4", (LoadShape("step_down", (2.0, 3.0), factor=(3.5, 4.5)),)), 1.0),
    (Family("diurnal_2p", (LoadShape("diurnal", (0.75, 1.25), amplitude=(0.3, 0.6),
                                     periods=2),)), 1.0),
    (Family("fault_down_unseen", (_STEADY_BASE,), replace(_HELD_OUT_FAULT, kinds=("down",))),
     1.0),
    (Family("fault_slow_unseen", (_STEADY_BASE,), replace(_HELD_OUT_FAULT, kinds=("slow",))),
     1.0),
    (Family("shift_fault_unseen", (_STEP_UP, _STEP_DOWN, _RAMP), _HELD_OUT_FAULT), 1.0),
))

#: The distributions by name.
DISTRIBUTIONS: dict[str, Distribution] = {d.name: d for d in (TRAINING, HELD_OUT)}


def _distribution(distribution: Distribution | str) -> Distribution:
    if isinstance(distribution, Distribution):
        return distribution
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown scenario distribution {distribution!r} "
                         f"(known: {', '.join(DISTRIBUTIONS)})")
    return DISTRIBUTIONS[distribution]


def _pick(rng: np.random.Generator, weights: Sequence[float]) -> int:
    w = np.asarray(weights, dtype=np.float64)
    return int(rng.choice(len(w), p=w / w.sum()))


def draw(distribution: Distribution | str, rng: np.random.Generator,
         episode_len: int) -> Scenario:
    """One scenario of ``distribution`` (:data:`TRAINING`, :data:`HELD_OUT` or their name):
    a family and a start by their weights, then the family's parameters, all from ``rng``."""
    dist = _distribution(distribution)
    family = dist.families[_pick(rng, [w for _, w in dist.families])][0]
    start = dist.starts[_pick(rng, [w for _, w in dist.starts])][0]
    return family.sample(rng, episode_len, start)


def held_out_cases(seed: int, n: int, episode_len: int) -> list[Scenario]:
    """``n`` held-out evaluation scenarios, the same for the same arguments: case ``i`` is
    family ``i mod F`` of :data:`HELD_OUT` with start ``STARTS[(i // F) mod 3]`` (balanced), its
    parameters drawn from ``numpy.random.default_rng(seed)``; named ``case<i>:<parameters>``."""
    if not _is_int(n) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    rng = np.random.default_rng(seed)
    families = [f for f, _ in HELD_OUT.families]
    cases = []
    for i in range(n):
        family = families[i % len(families)]
        start = STARTS[(i // len(families)) % len(STARTS)]
        s = family.sample(rng, episode_len, start)  # type: ignore[arg-type]
        cases.append(replace(s, name=f"case{i:02d}:{s.name}"))
    return cases


# --- files ---------------------------------------------------------------------------------------

def load_scenarios(path: str | Path) -> list[Scenario]:
    """The scenarios of a YAML file holding a list of :meth:`Scenario.to_dict` mappings.

    Raises:
        ValueError: a missing or unreadable file, malformed YAML, not a list, or a bad field
            (one line naming the file, the scenario's index and the field).
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ValueError(f"{path}: malformed YAML{at}: {problem}") from None
    except OSError as err:
        raise ValueError(f"{path}: cannot read the scenario file: {err.strerror}") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a YAML list of scenarios, got {type(data).__name__}")
    scenarios = []
    for i, item in enumerate(data):
        try:
            scenarios.append(Scenario.from_dict(item))
        except ValueError as err:
            name = item.get("name") if isinstance(item, Mapping) else None
            label = f" ({name})" if isinstance(name, str) else ""
            raise ValueError(f"{path}: scenario {i}{label}: {err}") from None
    return scenarios


def save_scenarios(path: str | Path, scenarios: Sequence[Scenario]) -> None:
    """Write ``scenarios`` as a YAML list that :func:`load_scenarios` reads back unchanged."""
    Path(path).write_text(yaml.safe_dump([s.to_dict() for s in scenarios], sort_keys=False,
                                         default_flow_style=None, width=100))


__all__ = [
    "DISTRIBUTIONS",
    "FAULTABLE_SERVICES",
    "FAULT_KINDS",
    "HELD_OUT",
    "HELD_OUT_DOWN_SERVICES",
    "HELD_OUT_SLOW_SERVICES",
    "LOAD_KINDS",
    "MIN_EPISODE_LEN",
    "RUN_FAULT_END_S",
    "STARTS",
    "TRAINING",
    "TRAIN_DOWN_SERVICES",
    "TRAIN_SLOW_SERVICES",
    "Distribution",
    "Family",
    "FaultShape",
    "FaultWindow",
    "LoadShape",
    "Scenario",
    "diurnal_rates",
    "draw",
    "held_out_cases",
    "load_scenarios",
    "ramp_rates",
    "save_scenarios",
    "steady",
    "step_rates",
]
