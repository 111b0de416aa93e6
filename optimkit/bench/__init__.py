"""``optimkit bench``: a fair, reproducible comparison of every registered optimizer.

* :mod:`.tasks`: the suite (small real tasks that ship with the dev extras, and 2-D toys);
* :mod:`.runner`: one cell = one task x optimizer x lr x seed, deterministic;
* :mod:`.suite`: the protocol (same lr grid for all, then seeds at the best lr) and executors;
* :mod:`.store`: the SQLite results database, one transaction per cell;
* :mod:`.scoring`, :mod:`.report`, :mod:`.plots`: from the database to the report.
"""
