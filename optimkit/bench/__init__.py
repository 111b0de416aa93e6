"""``optimkit bench``: a fair, reproducible comparison of every registered optimizer.

* :mod:`.tasks`: the suite (a transformer LM on the stdlib's source at two token budgets, a
  conv net on the digits, MNIST-1D-style tasks, the small tasks of the quick preset, and 2-D
  toys); :mod:`.lm`, :mod:`.mnist1d` their data;
* :mod:`.runner`: one cell = one task x optimizer x hypers x seed, deterministic;
  :mod:`.cost`: the step-time and memory cell on a 10.9M-parameter model;
* :mod:`.search`: the protocol (the same lr grid, extension rule, weight decays, tuning and
  test seeds for every optimizer); :mod:`.suite`: presets, the run and its executors;
* :mod:`.store`: the SQLite results database, one transaction per cell;
* :mod:`.ranking`: the statistics (ties with the best, Friedman + Nemenyi tiers, stability);
  :mod:`.scoring` (with the self-tuning track and "what to pick"), :mod:`.report`,
  :mod:`.plots`: from the database to the report.
"""
