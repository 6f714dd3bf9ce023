"""Benchmarks of APFP-NAS, each measured beside its baseline in the same run.

Every benchmark is a module with a command line (``python -m bench.<name>``), a
``--quick`` mode for the tests, and a JSON result under ``bench/results/`` that
records the command, the git commit, the machine and the seeds:

* ``search_quality``: true accuracy of the recommended architectures against
  regularized evolution, random search, Optuna NSGA-II and a best-of-pool oracle,
  and the share of recommendations that meet their latency budget;
* ``accuracy_surrogate``: Kendall tau and regret of the accuracy surrogate on public
  and on private subnets, before and after correction with client reports;
* ``latency_surrogate``: share within ±10% and MAPE of the latency surrogate per
  built-in profile, beside the FLOPs-linear baseline and the measurement noise;
* ``cost``: CPU seconds of the whole two-stage run against training the candidates
  from scratch on the private data;
* ``federation``: share of a simulated round's wall time outside client work, and
  bytes sent per client against the weights its candidates need;
* ``scale``: peak memory and seconds per round with 10, 30 and 100 simulated clients.

``python -m bench.report`` renders the latest results as the tables of
``docs/benchmarks.md``. Benchmarks are not tests; ``tests/test_bench.py`` runs each
``--quick`` mode on tiny settings to keep it working.
"""
