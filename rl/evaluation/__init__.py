"""Evaluating policies and configurations: episodes, measurements, statistics and reports.

* ``closed_loop`` — run a controller (a policy, a static configuration, the rule-based
  controller, the gateway throttle) through a scenario, as MeshEnv would;
* ``scenario_eval`` / ``scenario_tables`` — every method through the held-out scenarios: the
  tables (score, good %, goodput, failure %, latency side by side, win rates) and the
  fault-case plot;
* ``ablation`` / ``cause_action`` — does the policy use what it sees: the same policy shown
  other cases' observations; which action it takes under which observed cause;
* ``steady_gap`` — the share of the gap to an oracle a method closes from the notebook's random
  start under a steady load, in training's range and above it (``evaluate.py --steady``);
* ``episode`` — the classic setup's episode runner: run one episode with an actor, re-measure
  its start and end; ``EpisodeOutcome``, ``EpisodeTrace``;
* ``actors`` — policies as evaluation sees them: an RLModule (greedy or sampled), uniform random;
* ``stats`` — gain summaries, bootstrap intervals, Welch's t, the share of a gap closed;
* ``seeds`` — which seeds are held out, validate, re-measure, and load the held-out cases;
* ``checkpoint`` — the one loader of a trained policy from an RLlib Algorithm checkpoint, and
  the best checkpoint of a sweep's ``results.json``;
* ``cases`` — the classic setup's held-out cases, and measuring configurations on a case;
* ``heldout`` — every method (policies, PPO, searches, the oracle) on those cases
  (``experiments/evaluate.py --classic``);
* ``tables`` / ``plots`` — markdown tables and figures of those results;
* ``transfer`` — the sim-trained policy on the simulator and on the local mesh;
* ``fidelity`` — the same configurations and loads through the simulator and the local mesh;
* ``throughput`` / ``job_timing`` — env steps per second through each layer; the main job's
  wall time;
* ``benchmarks_md`` — the one writer of a BENCHMARKS.md section.
"""
