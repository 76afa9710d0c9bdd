"""flk.sim: a deterministic SimPy simulator that runs the real implementation.

Public API: :mod:`flk.sim.api` (``run``, ``replay``, ``sweep``, ``catalog``, ``load_run``).
"""
