"""How a REINFORCE batch of whole episodes is split over env runners and their envs: pure
arithmetic, importable without Ray (the sweep checks its flags with it before Ray starts)."""

from __future__ import annotations


def episodes_per_runner(num_episodes: int, num_runners: int) -> list[int]:
    """Split ``num_episodes`` over ``num_runners`` as evenly as possible (first ones get more)."""
    if num_runners < 1:
        raise ValueError(f"num_runners must be >= 1, got {num_runners}")
    base, extra = divmod(num_episodes, num_runners)
    return [base + (1 if i < extra else 0) for i in range(num_runners)]


def groups_align(group_size: int, envs_per_runner: int, num_episodes: int,
                 num_runners: int) -> bool:
    """Whether episodes can come in groups of ``group_size`` that replay the same scenario: the
    group size divides each runner's envs, and each runner's share of ``num_episodes``
    (:func:`episodes_per_runner`) is a multiple of its envs, so that every env of a group runs
    the same number of episodes. Always true for ``group_size`` 1."""
    if group_size <= 1:
        return True
    shares = episodes_per_runner(num_episodes, max(1, num_runners))
    return not envs_per_runner % group_size and not any(s % envs_per_runner for s in shares)


__all__ = ["episodes_per_runner", "groups_align"]
