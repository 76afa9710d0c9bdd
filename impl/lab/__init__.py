"""The lab: the ``flk`` command line and what only it may import (sim, formal, conformance).

Modules:

* :mod:`.cli`      -- the ``flk`` entry point, one ``cmd_<name>`` module per subcommand
* :mod:`.bench`    -- the benchmarks, one module per ``flk bench NAME``
* :mod:`.cluster`  -- ``flk cluster run``: a scenario on real ``flk serve`` regions with real faults
* :mod:`.demo`     -- ``flk demo``: the whole lab end to end on embedded defaults
* :mod:`.report`   -- the shareable HTML report of a demo or a set of runs
* :mod:`.kpidash`  -- the KPI dashboard and the alert proofs of simulator runs (``flk kpi``)
* :mod:`.compliance` -- the SOC 2 / ISO 27001 evidence report (``flk compliance report``)
* :mod:`.modelreplay` -- a model counterexample replayed on the real implementation (``flk check model --replay``)
* :mod:`.vectors`  -- the frozen test vectors ``spec/vectors/*.json``, generated from the core
"""
