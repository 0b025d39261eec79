"""Read a trained policy back: the one loader of an RLlib Algorithm checkpoint's RLModule.

* :func:`load_policy` — the RLModule of an Algorithm checkpoint, with the env config it was
  trained on and the env steps it sampled (:class:`PolicyCheckpoint`); no env runners built;
* :func:`best_checkpoint` — the best trial's checkpoint a ``pg_sweep.py`` run recorded in its
  ``results.json``.

The checkpoint's layout comes from RLlib's own names (``COMPONENT_LEARNER_GROUP`` /
``COMPONENT_LEARNER`` / ``COMPONENT_RL_MODULE`` / ``DEFAULT_MODULE_ID``, the Algorithm's state
and constructor-arguments files), not from path strings written here.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Where ``pg_sweep.py`` writes its results by default.
DEFAULT_SWEEP_RESULTS = Path("results/pg_sweep/results.json")


class CheckpointError(RuntimeError):
    """A checkpoint or results file that is missing or is not what it should be (a problem
    the user can fix)."""


@dataclass(frozen=True)
class PolicyCheckpoint:
    """A trained policy and what it was trained on.

    Attributes:
        module: the RLModule (``forward_inference`` gives action logits).
        env_config: the MeshEnv config it was trained with.
        env_steps_trained: env steps sampled during training (RLlib's lifetime counter).
        path: the Algorithm checkpoint directory.
    """

    module: Any
    env_config: dict[str, Any]
    env_steps_trained: int | None
    path: Path


def module_dir(checkpoint: Path) -> Path:
    """Where an Algorithm checkpoint keeps its (default) RLModule."""
    from ray.rllib.core import (
        COMPONENT_LEARNER,
        COMPONENT_LEARNER_GROUP,
        COMPONENT_RL_MODULE,
        DEFAULT_MODULE_ID,
    )

    return (checkpoint / COMPONENT_LEARNER_GROUP / COMPONENT_LEARNER / COMPONENT_RL_MODULE
            / DEFAULT_MODULE_ID)


def load_policy(checkpoint: str | Path) -> PolicyCheckpoint:
    """Read an RLlib Algorithm checkpoint: its RLModule, env config and env steps sampled.

    Raises:
        CheckpointError: the directory is not an Algorithm checkpoint of a policy.
    """
    from ray.rllib.algorithms.algorithm import Algorithm
    from ray.rllib.core.rl_module.rl_module import RLModule
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME

    checkpoint = Path(checkpoint).resolve()  # RLlib reads a relative path as a URI
    ctor = checkpoint / Algorithm.CLASS_AND_CTOR_ARGS_FILE_NAME
    modules = module_dir(checkpoint)
    if not ctor.is_file() or not modules.is_dir():
        raise CheckpointError(f"{checkpoint} is not an RLlib Algorithm checkpoint (expected "
                              f"{ctor.name} and {modules.relative_to(checkpoint)})")
    with ctor.open("rb") as f:
        config = pickle.load(f)["ctor_args_and_kwargs"][0][0]
    env_config = dict(config.get("env_config") or {})
    steps = None
    state_file = checkpoint / f"{Algorithm.STATE_FILE_NAME}.pkl"
    if state_file.is_file():
        with state_file.open("rb") as f:
            stats = pickle.load(f).get("metrics_logger", {}).get("stats", {})
        lifetime = stats.get(f"{ENV_RUNNER_RESULTS}--{NUM_ENV_STEPS_SAMPLED_LIFETIME}", {})
        if "lifetime_sum" in lifetime:
            steps = int(lifetime["lifetime_sum"])
    return PolicyCheckpoint(RLModule.from_checkpoint(modules), env_config, steps, checkpoint)


def best_checkpoint(sweep_results: Path = DEFAULT_SWEEP_RESULTS) -> Path:
    """The best trial's checkpoint recorded by ``pg_sweep.py`` in ``sweep_results``.

    Raises:
        CheckpointError: the file does not exist or names no best checkpoint.
    """
    if not sweep_results.is_file():
        raise CheckpointError(f"{sweep_results} does not exist: run python "
                              "experiments/pg_sweep.py first (or --smoke --output DIR) or pass "
                              "--checkpoint")
    best = json.loads(sweep_results.read_text()).get("best") or {}
    if not best.get("checkpoint"):
        raise CheckpointError(f"{sweep_results} records no best trial checkpoint")
    return Path(best["checkpoint"])
