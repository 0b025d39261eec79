"""Does the action critic know what an action does? Its ``Q(s, a)`` beside the true one-step
effect, state by state.

For each start (``--starts``: Istio's defaults, the notebook's random draw, ...), steady offered
rate (``--rates``, req/s) and episode seed (``--seeds``): the checkpoint's env at its reset
state, the critic's ``Q`` of a few actions (the whole-mesh restore if the catalogue has one, and
``http2MaxRequests`` 16 on each ``--cap-services`` service: the admission cap the main job's
policy takes) and of the greedy policy's action, beside what each action really did on that
step: MeshEnv's ``vs_keep`` reward, the step's score minus the same run (same load, same load
seed) without the action — exact on the simulator, 0 for an action that changes nothing. A
critic whose ``Q`` does not follow the true effect across states gives a policy that cannot
either.

    python scripts/critic_check.py CHECKPOINT --rates 30 60 90 120 180 240 --seeds 1 2

The checkpoint must be of the action critic (``--learner critic``, or ``train_variant.py
--action-critic``). On the simulator, seeded: the same checkpoint, the same table. Used for
BENCHMARKS.md (Closed-loop evaluation). A path that is not a critic's checkpoint is one line on
stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rl  # noqa: F401  (keeps a private local Ray on 127.0.0.1; before Ray is imported)
from envs.scenarios import STARTS

#: The admission cap whose Q is shown per service: its knob's ``set`` value.
CAP_TEXT = "http.http2MaxRequests set 16"
CAP_SET = "set 16"


@dataclass(frozen=True)
class Row:
    """One state: its start, rate (req/s) and seed; per action shown, ``(Q, true effect)`` in
    score points (the critic's units with ``vs_keep``); the greedy action's description."""

    start: str
    rate_rps: float
    seed: int
    values: dict[str, tuple[float, float]]
    greedy: str


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path, help="an action critic's RLlib Algorithm checkpoint")
    p.add_argument("--starts", nargs="+", default=["istio_default", "classic_random"],
                   choices=STARTS, help="starting configurations")
    p.add_argument("--rates", nargs="+", type=float, default=[30, 60, 90, 120, 180, 240],
                   help="steady offered rates, req/s")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2], help="episode seeds")
    p.add_argument("--cap-services", nargs="+", default=["front-end", "orders"],
                   help=f"services whose '{CAP_TEXT}' is shown")
    args = p.parse_args(argv)
    if any(r <= 0 for r in args.rates):
        p.error(f"--rates must be positive req/s, got {args.rates}")
    if any(s < 0 for s in args.seeds):
        p.error(f"--seeds must be >= 0, got {args.seeds}")
    return args


def check_states(module: Any, env_config: Mapping[str, Any], starts: Sequence[str],
                 rates: Sequence[float], seeds: Sequence[int],
                 cap_services: Sequence[str]) -> list[Row]:
    """The critic's Q beside the true one-step effect (module docstring) at every
    (start, rate, seed) reset state of ``MeshEnv(env_config)`` with ``vs_keep`` rewards.

    Raises:
        ValueError: the module has no critic, or a cap service is not in the catalogue.
    """
    import numpy as np
    import torch
    from ray.rllib.core.columns import Columns

    from envs.actions import ActionKind, make_catalogue
    from envs.knobs import Knob
    from envs.mesh_env import MeshEnv
    from envs.scenarios import steady
    from envs.settings import EnvSettings

    if not getattr(module, "has_q_head", False):
        raise ValueError("the checkpoint's module has no action critic (q_head): train it "
                         "with --learner critic or train_variant.py --action-critic")
    config = {**env_config, "reward_mode": "vs_keep", "load_seed": "per_episode"}
    settings = EnvSettings.from_config(config)
    catalogue = make_catalogue(settings.catalogue, settings.services)  # type: ignore[arg-type]
    actions = list(catalogue.actions)
    restore = [i for i, a in enumerate(actions) if a.kind is ActionKind.RESTORE]
    shown = {"restore": restore[0]} if restore else {}
    for service in cap_services:
        cap = [i for i, a in enumerate(actions) if a.service == service
               and a.knob is Knob.HTTP2_MAX_REQUESTS and a.change_text() == CAP_SET]
        if not cap:
            raise ValueError(f"no action '{service}: {CAP_TEXT}' in the "
                             f"{settings.catalogue!r} catalogue")
        shown[f"{service} cap"] = cap[0]

    def effect(scenario: Any, seed: int, action: int) -> float:
        env = MeshEnv(config)
        try:
            env.reset(seed=seed, options={"scenario": scenario})
            return float(env.step(action)[1])
        finally:
            env.close()

    rows = []
    for start in starts:
        for rate in rates:
            for seed in seeds:
                scenario = steady(float(rate), int(config.get("episode_len", 20)), start,
                                  name=f"{start} {rate:g}rps")
                env = MeshEnv(config)
                try:
                    obs, _ = env.reset(seed=seed, options={"scenario": scenario})
                finally:
                    env.close()
                batch = {Columns.OBS: torch.as_tensor(obs[None], dtype=torch.float32)}
                with torch.no_grad():
                    q = module.compute_action_values(batch)[0].numpy()
                    logits = module.forward_inference(batch)[Columns.ACTION_DIST_INPUTS][0]
                greedy = int(np.argmax(logits.numpy()))
                columns = {**shown, "greedy": greedy}
                effects = {a: effect(scenario, seed, a) for a in set(columns.values())}
                rows.append(Row(start, float(rate), seed,
                                {name: (float(q[a]), effects[a]) for name, a in columns.items()},
                                catalogue.describe(greedy)))
    return rows


def table(rows: Sequence[Row]) -> str:
    """Markdown: one row per state, ``Q / true`` per action shown."""
    names = list(rows[0].values) if rows else []
    lines = ["| start | req/s | seed | " + " | ".join(f"{n}: Q / true" for n in names)
             + " | greedy action |",
             "|---|---:|---:|" + "---:|" * len(names) + "---|"]
    for r in rows:
        cells = [f"{r.values[n][0]:+.1f} / {r.values[n][1]:+.1f}" for n in names]
        lines.append(f"| {r.start} | {r.rate_rps:g} | {r.seed} | " + " | ".join(cells)
                     + f" | {r.greedy} |")
    return "\n".join(lines)


def agreement(rows: Sequence[Row]) -> tuple[int, float, float]:
    """How well Q follows the true effect over every (state, shown action) pair, the greedy
    column left out (it repeats one of the others or adds one action per state): ``(pairs,
    Pearson r, mean |Q - true|)`` in score points; r is NaN if either side is constant."""
    import numpy as np

    pairs = [v for r in rows for name, v in r.values.items() if name != "greedy"]
    q, true = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    r = float(np.corrcoef(q, true)[0, 1]) if len(pairs) > 1 and q.std() and true.std() \
        else float("nan")
    return len(pairs), r, float(np.mean(np.abs(q - true))) if pairs else float("nan")


def main(argv: Sequence[str] | None = None) -> int:
    """Load the checkpoint, check the states, print the table."""
    args = parse_args(argv)
    from rl.evaluation.checkpoint import CheckpointError, load_policy

    try:
        policy = load_policy(args.checkpoint)
        rows = check_states(policy.module, policy.env_config, args.starts, args.rates,
                            args.seeds, args.cap_services)
    except (CheckpointError, ValueError) as exc:
        print(f"critic_check: error: {exc}", file=sys.stderr)
        return 2
    print(table(rows))
    n, r, mae = agreement(rows)
    print(f"\nQ against the true effect over {n} (state, action) pairs (the greedy column left "
          f"out): Pearson r {r:.2f}, mean |Q - true| {mae:.1f} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
