"""Which knob the policy moves under which observed cause: the cause → action table and heat
map of issue 12.

For every step of the policy's held-out runs, the *cause* is read from the observation the
policy acted on (``envs.observation``): the largest, over the catalogue's services, of the
fractions ``uo_frac`` (pool overflow, ``UO``), ``uf_frac`` (connect failure), ``ut_frac``
(timeout), ``reset_frac`` (refused / reset: a service down), ``urx_frac`` (retries exhausted)
and ``retry_overflow_frac`` (retries skipped), if at least :data:`CAUSE_THRESHOLD`; failing
that, ``unmeasured`` when a service that received requests has no cause counts from its
backend (``causes_seen`` 0: an absent cause is then unknown, not zero), ``overload`` when the
offered load is above :data:`OVERLOAD_LEVEL` × nominal, else ``none``. The *action* is the
knob the catalogue action sets (or the no-op), split by whether it acts on the gateway
(front-end) or on a callee.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from envs.actions import ActionCatalogue, ActionKind
from envs.observation import ObservationEncoder, ratio_scale
from rl.evaluation.closed_loop import ScenarioRun

#: The cause channels, as named in the observation, and their labels.
CAUSES: tuple[tuple[str, str], ...] = (
    ("uo_frac", "UO overflow"), ("uf_frac", "UF connect failure"), ("ut_frac", "UT timeout"),
    ("reset_frac", "reset (down)"), ("urx_frac", "URX retries exhausted"),
    ("retry_overflow_frac", "retry overflow"))
#: Smallest fraction of attempts (or requests) that names a cause.
CAUSE_THRESHOLD = 0.01
#: Offered load above this multiple of the nominal rate counts as ``overload`` (the simulated
#: shop serves about 1.8 × nominal with Istio's defaults).
OVERLOAD_LEVEL = 1.8
#: The row labels, in table order.
ROWS: tuple[str, ...] = (*(label for _, label in CAUSES), "unmeasured", "overload", "none")


def observed_cause(obs: np.ndarray, encoder: ObservationEncoder) -> str:
    """The cause label of one observation (module docstring)."""
    index = {name: i for i, name in enumerate(encoder.names)}
    best, best_label = 0.0, None
    for channel, label in CAUSES:
        for service in encoder.catalogue.services:
            value = float(obs[index[f"service/{service}/{channel}"]])
            if value > best:
                best, best_label = value, label
    if best_label is not None and best >= CAUSE_THRESHOLD:
        return best_label
    if any(obs[index[f"service/{s}/seen"]] > 0 and obs[index[f"service/{s}/causes_seen"]] == 0
           for s in encoder.catalogue.services):
        return "unmeasured"
    if float(obs[index["load/level"]]) > ratio_scale(OVERLOAD_LEVEL):
        return "overload"
    return "none"


def action_label(catalogue: ActionCatalogue, index: int) -> str:
    """``<knob> (gateway)`` / ``<knob> (callee)``, ``reset (gateway)`` / ``reset (callee)``,
    ``restore (mesh)`` or ``no-op``."""
    action = catalogue.action(index)
    if action.kind is ActionKind.RESTORE:
        return "restore (mesh)"
    if action.kind is ActionKind.NOOP or action.service is None:
        return "no-op"
    where = "gateway" if action.service == "front-end" else "callee"
    if action.kind is ActionKind.RESET:
        return f"reset ({where})"
    assert action.knob is not None  # every other service action moves a knob
    return f"{action.knob.value} ({where})"


def cause_action_counts(runs: Sequence[ScenarioRun], catalogue: ActionCatalogue,
                        episode_len: int) -> dict[str, dict[str, int]]:
    """Counts of (cause, action label) over every policy step of ``runs``."""
    encoder = ObservationEncoder(catalogue, episode_len)
    counts: dict[str, dict[str, int]] = {row: {} for row in ROWS}
    for run in runs:
        for step in run.steps[1:]:
            if step.action is None or step.t - 1 >= len(run.observations):
                continue
            cause = observed_cause(run.observations[step.t - 1], encoder)
            label = action_label(catalogue, step.action)
            counts[cause][label] = counts[cause].get(label, 0) + 1
    return counts


def cause_action_markdown(counts: dict[str, dict[str, int]]) -> list[str]:
    """The table: one row per observed cause, the steps and the three most chosen actions."""
    md = ["| observed cause | steps | most chosen actions (share of the row) |", "|---|---:|---|"]
    for row in ROWS:
        total = sum(counts[row].values())
        if not total:
            continue
        top = sorted(counts[row].items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        md.append(f"| {row} | {total} | "
                  + ", ".join(f"`{label}` {n / total:.0%}" for label, n in top) + " |")
    return md


def plot_cause_action(counts: dict[str, dict[str, int]], path: Path) -> None:
    """PNG heat map: rows the observed causes, columns the actions, cells the share of the
    row's steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in ROWS if sum(counts[r].values())]
    cols = sorted({label for r in rows for label in counts[r]})
    share = np.array([[counts[r].get(c, 0) / sum(counts[r].values()) for c in cols]
                      for r in rows]) if rows and cols else np.zeros((1, 1))
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * max(1, len(cols)), 1.2 + 0.45 * max(1, len(rows))),
                           constrained_layout=True)
    image = ax.imshow(share, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), [f"{r} ({sum(counts[r].values())})" for r in rows],
                  fontsize=7)
    ax.set_title("policy: chosen action by observed cause (share of steps)", fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.05)
    fig.savefig(path, dpi=90)
    plt.close(fig)


__all__ = ["CAUSES", "CAUSE_THRESHOLD", "OVERLOAD_LEVEL", "ROWS", "action_label",
           "cause_action_counts", "cause_action_markdown", "observed_cause",
           "plot_cause_action"]
