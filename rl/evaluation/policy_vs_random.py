"""A trained policy against the uniform random policy on the same held-out episodes
(pg_sweep's test of its best trial).

The policy runs sampled (as trained, seeded by the episode) and greedy; every episode's initial
and final configuration is scored over fresh load runs, the same loads for every policy.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from rl.evaluation.actors import module_actor, uniform_random_actor
from rl.evaluation.episode import EpisodeOutcome, evaluate, outcomes_to_records
from rl.evaluation.stats import summarise, welch_t

#: Held-out evaluation rows: key -> label in the table (how actions are chosen).
EVAL_POLICIES = {
    "policy": "best trial, sampled (as trained)",
    "greedy": "best trial, greedy (argmax)",
    "random": "uniform random",
}


def held_out_evaluation(module: Any, env_config: dict[str, Any], seeds: list[int],
                        measure_runs: int, rules_path: Path | None = None) -> dict[str, Any]:
    """Evaluate ``module`` and the uniform random policy on the same held-out seeds.

    The module is run two ways: sampling its softmax (seeded by the episode's seed — the
    policy as it was trained) and greedily. Each episode's initial and final configuration are
    scored over ``measure_runs`` fresh load runs (the same loads for every policy). Writes the
    greedy policy's final DestinationRules of the first seed to ``rules_path`` (YAML).
    """
    from envs.istio import dump_rules
    from envs.mesh_env import MeshEnv

    def make_env(seed: int) -> Any:
        return MeshEnv({**env_config, "seed": seed})

    def save_rules(env: Any, outcome: EpisodeOutcome) -> None:
        if rules_path is not None and outcome.seed == seeds[0]:
            final = ("unhealthy" if outcome.final_eval_score is None
                     else f"{outcome.final_eval_score:.2f}")
            header = (f"# meshtune: the best policy's final DestinationRules on held-out seed "
                      f"{outcome.seed}\n# evaluation score {outcome.initial_eval_score:.2f} "
                      f"(initial configuration) -> {final}\n")
            rules_path.write_text(header + dump_rules(env.current_rules()))

    actors = {
        "policy": lambda env, seed: module_actor(module, greedy=False, seed=seed),
        "greedy": lambda env, seed: module_actor(module, greedy=True),
        "random": lambda env, seed: uniform_random_actor(env.action_space, seed),
    }
    result: dict[str, Any] = {"seeds": seeds, "measure_runs": measure_runs}
    summaries = {}
    for key, make_actor in actors.items():
        outcomes = evaluate(make_env, make_actor, seeds,
                            on_episode_end=save_rules if key == "greedy" else None,
                            measure_runs=measure_runs)
        summaries[key] = summarise(outcomes)
        result[key] = asdict(summaries[key])
        result[f"{key}_episodes"] = outcomes_to_records(outcomes)
    result["welch_t_policy_minus_random"] = welch_t(summaries["policy"], summaries["random"])
    result["welch_t_greedy_minus_random"] = welch_t(summaries["greedy"], summaries["random"])
    return result
