"""The submit path's batch driver: the generator pipeline's answers, one sync per batch
and never an answer before it (INV-WAL-FIRST), failures fail the whole batch."""

from __future__ import annotations

import asyncio
import hashlib
import json

from flk.impl.agent import factory
from flk.impl.dedup import StoreUnavailable
from flk.impl.dedup.memory import MemoryStore
from flk.impl.server.batchdriver import BatchDriver, GuardedStore, LoggedWal
from flk.impl.storage.wal import SegmentedLog, WalError
from flk.impl.verifier.admission import CircuitBreaker
from flk.impl.verifier.metrics import Metrics
from flk.impl.verifier.pipeline import Request, Verifier, run_sync
from flk.impl.verifier.tenants import from_mapping

SECRET = b"batch-driver-secret-0001"


def registry():
    return from_mapping({"tenants": {"ta": {"alg": "hmac", "keys": [{"id": "a1", "secret": SECRET.decode()}]}}})


def body(i: int, epoch: int = 1) -> bytes:
    root = hashlib.sha256(f"root-{i}".encode()).hexdigest()
    doc = factory.synthetic_pcs(root, "shard-001", epoch, scales=(2, 4, 8, 16, 32), counts=(3, 5, 9, 17, 31),
                                coh=0.73, r=0.87)
    return json.dumps(factory.sign(doc, SECRET, "hmac")).encode()


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict]] = []

    def error(self, event: str, **kw) -> None:
        self.lines.append((event, kw))


class FakeServer:
    def __init__(self, wal) -> None:
        self.wal = wal
        self.log = Log()


def make(tmp_path, store=None, breaker=None, delay_s=0.001):
    wal = SegmentedLog(str(tmp_path / "wal"))
    srv = FakeServer(wal)
    guarded = GuardedStore(store or MemoryStore(), breaker or CircuitBreaker())
    driver = BatchDriver(Verifier(registry(), region="r1"), LoggedWal(lambda: srv.wal, srv.log.error), guarded, Metrics(), max_delay_s=delay_s)
    return driver, srv, guarded


def run_all(driver, items):
    async def main():
        return await asyncio.gather(*(driver.submit(b, t) for b, t in items), return_exceptions=True)

    try:
        return asyncio.run(main())
    finally:
        driver.close()


def test_answers_equal_the_generator_pipeline_and_one_sync_per_batch(tmp_path) -> None:
    items = [(body(i % 40), "ta") for i in range(60)] + [(b"{not json", "ta"), (body(1), "nobody"),
                                                         (body(2, epoch=2)[:-2] + b"}}", "ta")]
    driver, srv, guarded = make(tmp_path)
    syncs = []
    real = srv.wal.sync

    def counting():
        syncs.append(srv.wal.next_index)
        return real()

    srv.wal.sync = counting
    got = run_all(driver, items)
    ref_store = MemoryStore()
    ref = Verifier(registry(), region="r1")
    from flk.impl.testing.memwal import MemoryWal

    ref_wal = MemoryWal()
    want = [run_sync(ref.handle(Request(b, t, {}), 0.0), ref_wal, ref_store) for b, t in items]
    assert [(r.status, r.header("Idempotent-Replayed")) for r in got] == [
        (r.status, r.header("Idempotent-Replayed")) for r in want]
    assert driver.batches == len(syncs) < len(items)  # every request of a batch shares its sync
    assert srv.wal.is_durable(srv.wal.next_index - 1)
    assert guarded.batches >= 1 and guarded.batched_items >= 40


def test_a_failed_sync_fails_every_request_of_the_batch_and_is_logged(tmp_path) -> None:
    driver, srv, guarded = make(tmp_path, delay_s=0.05)

    def broken():
        raise OSError(28, "No space left on device")

    srv.wal.sync = broken
    got = run_all(driver, [(body(i), "ta") for i in range(10)])
    assert {r.status for r in got} == {503}
    assert driver.batches == 1
    assert srv.log.lines and all(e == "wal_append_failed" for e, _ in srv.log.lines)
    assert guarded.batches == 0  # nothing reached the store


class DownStore(MemoryStore):
    def get_many(self, keys, now):
        raise ConnectionError("down")

    def put_many_if_absent(self, items, now, ttl_s=None):  # the core's only call without hooks (no lookup)
        raise ConnectionError("down")


def test_store_failures_open_the_breaker_and_answer_503(tmp_path) -> None:
    breaker = CircuitBreaker(failure_threshold=1, open_s=60.0)
    driver, srv, guarded = make(tmp_path, store=DownStore(), breaker=breaker)
    got = run_all(driver, [(body(i), "ta") for i in range(5)])
    assert {r.status for r in got} == {503}
    assert breaker.state == "open"
    driver2 = BatchDriver(driver.verifier, LoggedWal(lambda: srv.wal, srv.log.error), guarded, Metrics(), max_delay_s=0.0)
    again = run_all(driver2, [(body(i + 10), "ta") for i in range(3)])
    assert {r.status for r in again} == {503}
    assert guarded.breaker_rejected == 3
    assert guarded.failed_items == 5 and guarded.batched_items == 8  # the failed call's items; all admitted


def test_a_partial_outage_counts_its_failed_items_while_the_breaker_stays_closed(tmp_path) -> None:
    """Calls with a lost shard's keys fail, the others answer: the breaker (failures in a row) stays
    closed, and ``failed_items`` (flk_store_failed_items_total, FlkDedupStoreErrors) says what failed."""
    class HalfDown(MemoryStore):  # the keys of a lost shard: pcs_ids from 0 to 7
        def get_many(self, keys, now):
            if any(p[0] in "01234567" for _t, p in keys):
                raise ConnectionError("shard down")
            return super().get_many(keys, now)

        def put_many_if_absent(self, items, now, ttl_s=None):
            if any(p[0] in "01234567" for _t, p, _o in items):
                raise ConnectionError("shard down")
            return super().put_many_if_absent(items, now, ttl_s)

    breaker = CircuitBreaker(failure_threshold=5, open_s=60.0)
    driver, srv, guarded = make(tmp_path, store=HalfDown(), breaker=breaker)
    driver.close()
    got = []
    for i in range(24):  # one request per batch: failures and successes interleave
        one = BatchDriver(driver.verifier, LoggedWal(lambda: srv.wal, srv.log.error), guarded, Metrics(),
                          max_delay_s=0.0)
        got += run_all(one, [(body(i), "ta")])
    failed = sum(r.status == 503 for r in got)
    assert 0 < failed < len(got) and breaker.state == "closed" and guarded.breaker_rejected == 0
    assert guarded.failed_items == failed


def test_guarded_store_reports_short_batches_as_unavailable() -> None:
    class Short(MemoryStore):
        def get_many(self, keys, now):
            return []

    store = GuardedStore(Short(), CircuitBreaker())
    try:
        store.get_many([("ta", "x")], 0.0)
    except StoreUnavailable:
        pass
    else:  # pragma: no cover
        raise AssertionError("a short batch must fail closed")


def test_the_store_failing_and_answering_again_are_logged_once_each_with_what_it_cost() -> None:
    """dedup_store_failing at the first failed call (its reason), dedup_store_recovered at
    the first call that succeeds after (seconds down, requests failed and refused); none
    while the store answers, none per request."""

    class Flaky(MemoryStore):
        down = False

        def get_many(self, keys, now):
            if self.down:
                raise StoreUnavailable("postgres store call timed out after 2 s (STORE_TIMEOUT_S)")
            return super().get_many(keys, now)

    clock, events = [100.0], []
    store = Flaky()
    guarded = GuardedStore(store, CircuitBreaker(failure_threshold=2, open_s=5.0), lambda: clock[0],
                           log=lambda level, event, **f: events.append((level, event, f)))

    def call(n: int) -> bool:
        try:
            guarded.get_many([("ta", f"k{i}") for i in range(n)], clock[0])
            return True
        except StoreUnavailable:
            return False

    assert call(3) and call(1) and events == []
    store.down = True
    for n in (2, 3, 4, 4):  # two failed calls open the breaker; the next two are refused without a call
        clock[0] += 1.0
        assert not call(n)
    assert events == [("warning", "dedup_store_failing",
                       {"reason": "postgres store call timed out after 2 s (STORE_TIMEOUT_S)",
                        "detail": "requests are answered 503 until it answers again"})]
    store.down = False
    clock[0] += 5.0  # past open_s: the half-open probe succeeds
    assert call(2) and call(2)
    assert events[1:] == [("info", "dedup_store_recovered",
                           {"down_s": 8.0, "failed_requests": 5, "refused_requests": 8, "breaker_opens": 1})]
    store.down = True  # a second outage is a second pair
    clock[0] += 1.0
    assert not call(1)
    store.down = False
    clock[0] += 1.0
    assert call(1)
    assert [e[1] for e in events] == ["dedup_store_failing", "dedup_store_recovered"] * 2
    assert events[3][2] == {"down_s": 1.0, "failed_requests": 1, "refused_requests": 0, "breaker_opens": 0}


def test_close_fails_later_submissions(tmp_path) -> None:
    driver, srv, _ = make(tmp_path)
    driver.close()

    async def main():
        return await asyncio.gather(driver.submit(body(1), "ta"), return_exceptions=True)

    (res,) = asyncio.run(main())
    assert isinstance(res, RuntimeError)
    assert not isinstance(res, WalError)


def test_a_batch_answers_futures_of_two_running_loops(tmp_path) -> None:
    import threading

    driver, _, _ = make(tmp_path, delay_s=0.3)
    other: list = []
    queued = threading.Event()

    def in_thread():
        async def one():
            fut = driver.submit(body(1), "ta")
            queued.set()
            return await fut

        other.append(asyncio.run(one()))

    t = threading.Thread(target=in_thread)
    t.start()
    queued.wait(5)

    async def main():
        return await driver.submit(body(2), "ta")

    try:
        mine = asyncio.run(main())
        t.join(10)
    finally:
        driver.close()
    assert mine.status == 200 and [r.status for r in other] == [200]
    assert driver.batches == 1  # one batch, answered on one loop, set on each future's own loop


def test_inv_wal_first_every_answer_comes_after_the_sync_covering_its_record(tmp_path) -> None:
    """Whenever a submission's answer arrives, every record appended so far is durable: the
    batch driver answers only after the sync of its batch (INV-WAL-FIRST). A slow sync widens
    the window in which an early answer would show."""
    import time as _time

    driver, srv, _ = make(tmp_path, delay_s=0.002)
    real = srv.wal.sync

    def slow():
        _time.sleep(0.02)
        return real()

    srv.wal.sync = slow
    seen: list[tuple[int, int]] = []
    start = srv.wal.next_index

    async def main():
        futs = [driver.submit(body(i), "ta") for i in range(30)]
        for i, f in enumerate(futs):
            f.add_done_callback(lambda _f, i=i: seen.append((i, srv.wal.durable_index)))
        return await asyncio.gather(*futs)

    try:
        got = asyncio.run(main())
    finally:
        driver.close()
    assert {r.status for r in got} == {200} and len(seen) == 30
    assert srv.wal.next_index == start + 30  # one inbox record per submission, in submission order
    # request i's record is start + i: its answer comes only once the sync covering it is done (the
    # batch thread may already be appending the next batch when the loop runs the callback, so
    # "everything appended is durable" would be a race of the test, not of the driver)
    assert all(durable >= start + i + 1 for i, durable in seen), seen


def test_a_due_batch_starts_on_its_timer_without_spinning_uvloops_millisecond_clock(tmp_path) -> None:
    """uvloop's clock and timers count whole milliseconds and run a timer less than half a
    millisecond away at once: a deadline 0.4 ms ahead fires before the clock reaches it. The
    batch starts on that firing (one timer callback, and its wait is the delay at least
    minus the clock's rounding) -- judged at the clock instead, the timer re-armed itself
    hundreds of times until the clock's next millisecond (a busy event loop)."""
    import uvloop

    driver, _, _ = make(tmp_path, delay_s=0.0004)
    fired = []
    on_timer = driver._on_timer

    def counting(deadline):
        fired.append(deadline)
        on_timer(deadline)

    driver._on_timer = counting

    async def main():
        out = []
        for i in range(5):  # at different offsets within the clock's millisecond
            driver.formation.expect = 2  # as after a batch of two: a lone request waits the delay
            out.append((await driver.submit(body(i), "ta")).status)
            await asyncio.sleep(0.0003 * i)
        return out

    loop = uvloop.new_event_loop()
    try:
        assert loop.run_until_complete(main()) == [200] * 5
    finally:
        driver.close()
        loop.close()
    assert driver.formation.batches == 5 and len(fired) == 5  # one firing per batch, no spin
    assert driver.stages.as_dict()["batches"] == 5



def test_a_batch_starts_without_the_delay_once_as_many_wait_as_the_last_batch_held(tmp_path) -> None:
    """The driver follows BatchFormation's ``expect``: a fresh driver's first batch (two
    requests) waits out its 2 s delay, but once a batch of two was answered the next two
    requests start a batch at once; a lone request still waits."""
    import time

    driver, _, _ = make(tmp_path, delay_s=2.0)

    async def main():
        t0 = time.monotonic()
        first = await asyncio.gather(*(driver.submit(body(i), "ta") for i in range(2)))
        t1 = time.monotonic()
        second = await asyncio.gather(*(driver.submit(body(i), "ta") for i in range(2, 4)))
        t2 = time.monotonic()
        lone = driver.submit(body(9), "ta")
        await asyncio.sleep(0.3)
        return [r.status for r in first + second], t1 - t0, t2 - t1, lone.done(), driver.formation.batches

    try:
        statuses, first_s, second_s, lone_done, batches = asyncio.run(main())
    finally:
        driver.close()
    assert statuses == [200] * 4 and batches == 2
    assert first_s >= 2.0  # a fresh queue's first batch waits the delay
    assert second_s < 1.0  # as many as the last batch held: at once, not after 2 s
    assert not lone_done  # one of the two expected: it waits the delay


def test_inv_wal_first_requests_joined_during_the_hand_off_are_answered_after_the_sync_covering_them(
        tmp_path) -> None:
    """The batch thread picks a started batch up later than the loop started it (here: the
    seal lock holds it parked); what queued meanwhile joins it before its append -- one batch,
    one WAL sync after all three records, and no request answered before that sync has
    returned (a slowed sync widens the window; BatchFormation.join)."""
    import time

    driver, srv, _ = make(tmp_path, delay_s=0.0)  # depth 1, the server's default
    syncs: list[int] = []
    answered_at_sync: list[int] = []
    futs: list = []
    real = srv.wal.sync

    def counting():
        syncs.append(srv.wal.next_index)
        time.sleep(0.05)
        answered_at_sync.append(sum(f.done() for f in futs))
        return real()

    srv.wal.sync = counting
    assert driver.lock.acquire(timeout=5)  # no batch in flight: granted at once

    async def main():
        f1 = driver.submit(body(1), "ta")  # due at once (no delay): started, then parked by the lock
        await asyncio.sleep(0.05)
        rest = [driver.submit(body(i), "ta") for i in (2, 3)]  # one batch runs: they queue
        futs.extend((f1, *rest))
        await asyncio.sleep(0.05)
        parked = not any(f.done() for f in (f1, *rest)) and driver.formation.queued == 2
        driver.lock.release()
        return parked, [r.status for r in await asyncio.gather(f1, *rest)]

    try:
        parked, statuses = asyncio.run(main())
    finally:
        driver.close()
    assert parked and statuses == [200, 200, 200]
    assert driver.formation.batches == 1 and driver.formation.expect == 3 and driver.formation.queued == 0
    assert syncs == [3] and answered_at_sync == [0]  # one sync, after all three records, before any answer
    assert driver.stages.as_dict()["requests"] == 3


def test_submit_then_answers_what_submit_answers_and_a_failing_callback_stops_no_other_answer(tmp_path) -> None:
    """The direct HTTP path's callback form: every callback gets the Response the future form
    gets for the same requests (same batches), once; a callback that raises is reported to the
    loop's exception handler and the rest of its batch is still answered; a closed driver calls
    back at once with the error."""
    items = [(body(i % 12), "ta") for i in range(30)] + [(b"{not json", "ta"), (body(3), "nobody")]
    ref_driver, _, _ = make(tmp_path / "ref")
    want = run_all(ref_driver, items)
    driver, _, _ = make(tmp_path / "cb")
    got: dict[int, list] = {}
    reported: list = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, ctx: reported.append(ctx.get("exception")))
        done = loop.create_future()

        def then(k: int):
            def call(resp, error) -> None:
                got.setdefault(k, []).append((resp, error))
                if len(got) == len(items) and not done.done():
                    done.set_result(None)
                if k == 5:
                    raise ValueError("this caller fails")
            return call

        for k, (b, t) in enumerate(items):
            driver.submit_then(b, t, then(k))
        await asyncio.wait_for(done, 30)

    try:
        asyncio.run(main())
    finally:
        driver.close()
    assert sorted(got) == list(range(len(items)))
    assert all(len(calls) == 1 for calls in got.values())  # once each
    assert [(r.status, r.header("Idempotent-Replayed")) for r, _ in (got[k][0] for k in range(len(items)))] == [
        (w.status, w.header("Idempotent-Replayed")) for w in want]
    assert all(error is None for calls in got.values() for _, error in calls)
    assert [type(e) for e in reported] == [ValueError]
    closed: list = []
    driver.submit_then(body(1), "ta", lambda resp, error: closed.append((resp, type(error))))
    assert closed == [(None, RuntimeError)]
