"""Results analysis: the result store, sweeps, statistics and reports.

Nothing in this package imports torch, so a store of imported results (from papers or
other toolkits) can be analysed and reported on a machine without it. Live runs come
from :mod:`speechssl.downstream.runner` and reach the store as ``result.json`` files.

The common currency is the *score row*: one plain ``dict`` per measured number, as
returned by :meth:`speechssl.benchmark.store.ResultStore.scores`::

    run_id, upstream, task, probe, regime, seed, dataset, language, split,
    metric, value, higher_is_better, status, source

``language`` is ``""`` for the overall score and an ISO code for per-language scores;
``regime`` is ``"frozen"`` unless the run adapted the upstream; ``seed`` may be None
for imported rows.
"""
