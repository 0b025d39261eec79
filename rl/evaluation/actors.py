"""Policies as evaluation sees them: an :data:`Actor` maps an observation to an action index.

* :func:`module_actor` — a trained RLModule, greedy (argmax of its logits) or sampling (seeded);
* :func:`uniform_random_actor` — every action with equal probability (seeded).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.columns import Columns

#: A policy as evaluation sees it: observation -> action index.
Actor = Callable[[np.ndarray], int]


def module_actor(module: Any, *, greedy: bool = True, seed: int = 0) -> Actor:
    """An :data:`Actor` from an RLModule: argmax of its logits, or a seeded sample from them.

    Puts ``module`` in eval mode (no dropout): the evaluated policy is the trained network
    itself, deterministic given the seed.
    """
    generator = torch.Generator().manual_seed(seed)
    module.eval()

    def act(obs: np.ndarray) -> int:
        batch = {Columns.OBS: torch.as_tensor(np.asarray(obs, dtype=np.float32)[None])}
        with torch.no_grad():
            logits = module.forward_inference(batch)[Columns.ACTION_DIST_INPUTS][0]
        if greedy:
            return int(torch.argmax(logits))
        return int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator))

    return act


def uniform_random_actor(action_space: gym.spaces.Discrete, seed: int) -> Actor:
    """An :data:`Actor` that picks each action with equal probability (seeded)."""
    rng = np.random.default_rng(seed)
    n = int(action_space.n)
    return lambda obs: int(rng.integers(n))
