"""Evaluating policies and configurations: episodes, measurements, statistics and reports.

* ``episode`` — run one episode with an actor, re-measure its start and end, summarise gains;
* ``benchmarks_md`` — the one writer of a BENCHMARKS.md section.
"""
