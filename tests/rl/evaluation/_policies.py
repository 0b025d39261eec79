"""Test policies for the closed-loop evaluation's tests: RLModule stand-ins whose greedy action
is a known function of the observation."""

from __future__ import annotations

import torch
from ray.rllib.core.columns import Columns


class ObsHash(torch.nn.Module):
    """A policy whose greedy action depends on the whole observation (a hash of it)."""

    def __init__(self, n_act: int) -> None:
        super().__init__()
        self.n_act = n_act

    def forward_inference(self, batch: dict) -> dict:
        obs = batch[Columns.OBS]
        index = (obs.double().sum(-1) * 1e4).long() % self.n_act
        return {Columns.ACTION_DIST_INPUTS: torch.nn.functional.one_hot(index, self.n_act)
                .float()}
