"""Which policy network a MeshEnv agent uses, and its ``model_config``: the one place that ties a
policy to the env's observation layout.

* ``shared`` (the default): :class:`rl.shared_module.SharedServiceModule`, one network scoring
  every service's acts from that service's own observation block and the global context, so it
  learns a rule once and applies it to every service (and to any number of services). Its
  ``service_features`` / ``global_features`` / ``acts_per_service`` / ``noop_action`` come from
  the env's :class:`envs.observation.ObservationEncoder` and action catalogue, computed from the
  ``env_config`` alone (no env is built).
* ``mlp``: the notebook's network (:class:`rl.module.SoftmaxPolicyModule`) over the whole
  observation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from envs.actions import ActionCatalogue, make_catalogue
from envs.observation import ObservationEncoder
from envs.settings import EnvSettings
from rl.module import SoftmaxPolicyModule
from rl.shared_module import DEFAULT_HIDDEN, SharedServiceModule

#: The policy choices of :func:`policy_spec`.
POLICIES: tuple[str, ...] = ("shared", "mlp")


def act_group(catalogue: ActionCatalogue, act: int) -> int:
    """The group of act ``act`` of a service's block: the index of the knob it moves in
    ``catalogue.knobs``; a reset (no knob: the whole rule) is a group of its own after them."""
    knob = catalogue.actions[act].knob
    return len(catalogue.knobs) if knob is None else catalogue.knobs.index(knob)


def inert_acts(env_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """What the shared module needs to tell, from an observation alone, which actions leave the
    effective configuration unchanged (its ``inert_acts`` key, :mod:`rl.shared_module`).

    A service's configuration block encodes each catalogue knob's effective value
    (:mod:`envs.observation`). A ``set`` act is inert where its knob's channel already holds
    the act's value; a service's reset where its block holds Istio's defaults; the whole-mesh
    restore where every block does; the no-op always. Acts whose result depends on the value
    they start from (a rung up or down, add, toggle) are never counted inert.

    Raises:
        ValueError: a bad ``env_config`` (as ``MeshEnv`` would say it).
    """
    from envs.actions import ActionKind
    from envs.observation import DEST_CHANNELS, config_block

    settings = EnvSettings.from_config(env_config)
    catalogue = make_catalogue(settings.catalogue, settings.services)  # type: ignore[arg-type]
    knobs = tuple(catalogue.knobs)
    offset = len(DEST_CHANNELS)  # the configuration block follows the destination block
    act_offset: list[int] = []
    act_value: list[float] = []
    for act in catalogue.actions[:catalogue.actions_per_service]:
        if act.kind is ActionKind.SET and act.knob is not None:
            k = knobs.index(act.knob)
            act_offset.append(offset + k)
            act_value.append(float(config_block(act.apply_to(None), knobs)[k]))
        else:
            act_offset.append(-1 if act.kind is ActionKind.RESET else -2)
            act_value.append(0.0)
    first_global = len(catalogue.services) * catalogue.actions_per_service
    kinds = [a.kind.value for a in catalogue.actions[first_global:]]
    return {"config_offsets": [offset + k for k in range(len(knobs))],
            "defaults": [float(v) for v in config_block(None, knobs)],
            "act_offset": act_offset, "act_value": act_value, "global_kinds": kinds}


def mesh_layout(env_config: Mapping[str, Any] | None, act_groups: bool = False
                ) -> dict[str, Any]:
    """The shared module's layout keys for the MeshEnv built from ``env_config``; with
    ``act_groups``, each act's group is the knob it moves (the module's group head).

    Raises:
        ValueError: a bad ``env_config`` (as ``MeshEnv`` would say it).
    """
    settings = EnvSettings.from_config(env_config)
    catalogue = make_catalogue(settings.catalogue, settings.services)  # type: ignore[arg-type]
    encoder = ObservationEncoder(catalogue, settings.episode_len)
    groups = {"act_groups": [act_group(catalogue, a) for a in range(catalogue.actions_per_service)]
              } if act_groups else {}
    return {**groups,
        "service_features": [list(s) for s in encoder.service_slices],
        "global_features": list(encoder.global_indices),
        "acts_per_service": catalogue.actions_per_service,
        "noop_action": catalogue.global_actions > 0,
        "global_actions": catalogue.global_actions,
    }


def policy_spec(policy: str, env_config: Mapping[str, Any] | None,
                hidden: tuple[int, ...] = DEFAULT_HIDDEN, act_groups: bool = False,
                factored: bool = False) -> tuple[RLModuleSpec, dict[str, Any]]:
    """The RLModule spec and the ``model_config`` of ``policy`` for MeshEnv(``env_config``):
    pass them as ``config.rl_module(rl_module_spec=spec, model_config=model_config)``;
    ``act_groups`` (shared policy only): the knob-group head; ``factored`` (shared policy
    only): the service first, then its act (both :mod:`rl.shared_module`).

    Raises:
        ValueError: an unknown ``policy`` or a bad ``env_config``.
    """
    if policy == "shared":
        return (RLModuleSpec(module_class=SharedServiceModule),
                {**mesh_layout(env_config, act_groups), "hidden": list(hidden),
                 **({"factored": True} if factored else {})})
    if policy == "mlp":
        if act_groups or factored:
            raise ValueError("act_groups and factored need the 'shared' policy (the MLP has no "
                             "act blocks)")
        return RLModuleSpec(module_class=SoftmaxPolicyModule), {}
    raise ValueError(f"unknown policy {policy!r}; choose one of {POLICIES}")


__all__ = ["POLICIES", "inert_acts", "mesh_layout", "policy_spec"]
