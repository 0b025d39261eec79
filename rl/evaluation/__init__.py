"""Evaluating policies and configurations: episodes, measurements, statistics and reports.

* ``episode`` — run one episode with an actor (the one episode runner), re-measure its start
  and end; ``EpisodeOutcome``, ``EpisodeTrace``;
* ``actors`` — policies as evaluation sees them: an RLModule (greedy or sampled), uniform random;
* ``stats`` — gain summaries, bootstrap intervals, Welch's t, the share of a gap closed;
* ``seeds`` — which seeds are held out, validate, re-measure, and load the held-out cases;
* ``checkpoint`` — the one loader of a trained policy from an RLlib Algorithm checkpoint, and
  the best checkpoint of a sweep's ``results.json``;
* ``policy_vs_random`` — a trained policy against the uniform random policy on held-out episodes;
* ``cases`` — held-out scenarios and cases, and measuring configurations on a case;
* ``heldout`` — every method (policies, PPO, searches, the oracle) on the held-out cases;
* ``tables`` / ``plots`` — markdown tables and figures of those results;
* ``transfer`` — the sim-trained policy on the simulator and on the local mesh;
* ``fidelity`` — the same configurations and loads through the simulator and the local mesh;
* ``throughput`` / ``job_timing`` — env steps per second through each layer; the main job's
  wall time;
* ``benchmarks_md`` — the one writer of a BENCHMARKS.md section.
"""
