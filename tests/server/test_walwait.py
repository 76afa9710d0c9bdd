"""The event-loop side of the group commit: released only when durable (INV-WAL-FIRST)."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flk.impl.server.walwait import WalWaiter
from flk.impl.storage.wal import SegmentedLog


@given(sizes=st.lists(st.integers(1, 300), min_size=1, max_size=60), delay_ms=st.sampled_from([0.0, 1.0, 5.0]))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_inv_wal_first_every_waiter_released_only_after_its_record_is_durable(tmp_path_factory, sizes, delay_ms):
    d = str(tmp_path_factory.mktemp("wal"))
    log = SegmentedLog(d)
    syncs = []
    real = log.sync

    def counting():
        syncs.append(log.next_index)
        return real()

    log.sync = counting
    waiter = WalWaiter(log, max_delay_s=delay_ms / 1000)
    payloads = [bytes([i % 256]) * n for i, n in enumerate(sizes)]

    async def one(p: bytes) -> int:
        idx = await waiter.append(p)
        assert log.is_durable(idx)  # never released before its fsync returned
        return idx

    async def main():
        return await asyncio.gather(*(one(p) for p in payloads))

    try:
        idxs = asyncio.run(main())
    finally:
        waiter.close()
    assert sorted(idxs) == list(range(len(payloads)))
    stored = dict(log.records())
    assert [stored[i] for i in idxs] == payloads
    assert len(syncs) <= waiter.appends + 1  # at most one sync per group, not one per record
    log.close()


def test_close_syncs_and_releases_the_pending_waiters(tmp_path) -> None:
    log = SegmentedLog(str(tmp_path / "wal"))
    waiter = WalWaiter(log, max_delay_s=0.05)

    async def main():
        task = asyncio.ensure_future(waiter.append(b"x"))
        while log.next_index == 0:  # the waiter appends at the end of the loop iteration
            await asyncio.sleep(0)
        await asyncio.get_running_loop().run_in_executor(None, waiter.close)  # stop: syncs what is pending
        return await asyncio.gather(task, return_exceptions=True)

    (res,) = asyncio.run(main())
    assert res == 0 and log.is_durable(0)  # close() syncs the pending record, then releases it
    log.close()


def test_appends_of_one_loop_iteration_go_to_the_log_as_one_group(tmp_path) -> None:
    log = SegmentedLog(str(tmp_path / "wal"))
    waiter = WalWaiter(log, max_delay_s=0.001)
    payloads = [b"r%d" % i for i in range(50)]

    async def main():
        return await asyncio.gather(*(waiter.append(p) for p in payloads))

    try:
        idxs = asyncio.run(main())
    finally:
        waiter.close()
    assert idxs == list(range(50)) and waiter.records == 50
    assert waiter.appends == 1  # gather starts all 50 in one iteration: one append_many
    assert [p for _, p in log.records()] == payloads
    log.close()


def test_a_failed_append_fails_every_request_of_its_group(tmp_path) -> None:
    from flk.impl.storage.wal import WalError

    log = SegmentedLog(str(tmp_path / "wal"))
    waiter = WalWaiter(log, max_delay_s=0.001)

    def refuse(_payloads):
        raise WalError("write failed: [Errno 28] No space left on device")

    log.append_many = refuse

    async def main():
        return await asyncio.gather(*(waiter.append(b"x") for _ in range(3)), return_exceptions=True)

    try:
        results = asyncio.run(main())
    finally:
        waiter.close()
    assert all(isinstance(r, WalError) for r in results) and len(results) == 3
    assert log.next_index == 0 and waiter.records == 0
    log.close()


def test_a_failed_sync_fails_every_waiter_and_every_later_wait(tmp_path) -> None:
    from flk.impl.storage.wal import WalError

    log = SegmentedLog(str(tmp_path / "wal"))
    waiter = WalWaiter(log, max_delay_s=0.0)

    def broken():
        raise WalError("fsync failed: [Errno 5] Input/output error")

    log.sync = broken

    async def main():
        first = await asyncio.gather(*(waiter.append(b"x") for _ in range(4)), return_exceptions=True)
        later = await asyncio.gather(waiter.append(b"y"), return_exceptions=True)
        return first, later

    try:
        first, later = asyncio.run(main())
    finally:
        waiter.close()
        del log.sync
    assert len(first) == 4 and all(isinstance(r, WalError) for r in first + later)
    assert log.durable_index == 0  # nothing was released as durable
    log.close()


def test_records_appended_during_a_sync_wait_for_the_next_one_and_share_it(tmp_path) -> None:
    import threading

    log = SegmentedLog(str(tmp_path / "wal"))
    waiter = WalWaiter(log, max_delay_s=0.0)
    gate = threading.Event()
    real = log.sync

    def slow():
        durable = real()
        gate.wait(5)  # the sync has covered only what was appended before it
        return durable

    log.sync = slow

    async def main():
        a = asyncio.ensure_future(waiter.append(b"a"))  # its sync waits at the gate
        while waiter.syncs == 0 and log.next_index == 0:
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        b = [asyncio.ensure_future(waiter.append(b"b%d" % i)) for i in range(5)]  # one group, after a's sync
        await asyncio.sleep(0.01)
        assert not a.done() and not any(f.done() for f in b)
        gate.set()
        return await asyncio.gather(a, *b)

    try:
        idxs = asyncio.run(main())
    finally:
        waiter.close()
    assert idxs == list(range(6)) and log.is_durable(5)
    assert waiter.syncs == 2  # a's sync, then one for the whole second group
    del log.sync
    log.close()
