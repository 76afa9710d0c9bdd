"""A list standing in for the inbox WAL, for tests and benchmarks of the pipeline.

Why this module exists: where durability is not the point (tests of the
WAL-first *order*, the refinement machine, benchmarks of the pipeline itself)
a WAL that keeps the ``WalAppend`` effects in memory is enough. It is a test
double, so it lives in ``impl/testing`` (production code never imports it);
the pipeline's drivers recognise it by its ``append_record`` method
(:class:`flk.impl.verifier.pipeline.RecordWal`).
"""

from __future__ import annotations

from ..verifier.pipeline import WalAppend


class MemoryWal:
    """Records in a list; ``fail = True`` makes every append and sync raise ``OSError``."""

    def __init__(self) -> None:
        self.records: list[WalAppend] = []
        self.synced = 0
        self.fail = False

    def append_record(self, effect: WalAppend) -> int:
        if self.fail:
            raise OSError("wal append failed")
        self.records.append(effect)
        return len(self.records) - 1

    def sync(self) -> None:
        if self.fail:
            raise OSError("wal sync failed")
        self.synced = len(self.records)
