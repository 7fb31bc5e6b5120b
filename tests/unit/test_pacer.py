"""EditPacer (windowed budgets, FIFO per key, independent keys, GC) and the FakeClock."""

from __future__ import annotations

import asyncio

import pytest

from bot.streaming import EditPacer
from tests.fakes.clock import FakeClock, settle

KEY = "channel-1"


def max_in_window(times: list[float], window: float) -> int:
    """Most grants inside any half-open window [t, t + window)."""
    times = sorted(times)
    return max(sum(1 for u in times if t <= u < t + window - 1e-6) for t in times)


async def grant_times(
    pacer: EditPacer, clock: FakeClock, n: int, key: str = KEY, per_s: float = 1.0, burst: int = 5
) -> list[float]:
    times: list[float] = []

    async def one() -> None:
        await pacer.acquire(key, per_s, burst)
        times.append(clock.now())

    await clock.run(asyncio.gather(*(one() for _ in range(n))))
    return times


async def test_unlimited_budget_never_waits() -> None:
    clock = FakeClock()
    pacer = EditPacer(clock=clock)
    for _ in range(1_000):
        await pacer.acquire(KEY, 0.0, 1)
    assert clock.slept == [] and pacer.tracked_keys == 0


async def test_burst_goes_at_once_then_one_token_per_interval() -> None:
    clock = FakeClock(start=0.0)
    pacer = EditPacer(clock=clock)
    times = await grant_times(pacer, clock, 12)
    assert times[:5] == [0.0] * 5
    assert times[5:] == pytest.approx([5.0] * 5 + [10.0] * 2)


async def test_no_window_ever_exceeds_the_budget_under_steady_load() -> None:
    clock = FakeClock(start=0.0)
    pacer = EditPacer(clock=clock)
    times: list[float] = []

    async def trickle(offset: float) -> None:
        await clock.sleep(offset)
        for _ in range(10):
            await pacer.acquire(KEY, 1.0, 5)
            times.append(clock.now())
            await clock.sleep(0.3)

    await clock.run(asyncio.gather(*(trickle(i * 0.7) for i in range(6))))
    assert len(times) == 60
    assert max_in_window(times, 5.0) == 5
    # A continuous-refill bucket would have allowed ~2 bursts in the first window.
    assert max(times) == pytest.approx(55.0, abs=1.0)


async def test_a_call_counts_from_its_answer_when_it_took_a_while() -> None:
    """The platform counts a call on arrival, up to its answer: a token dated at the
    grant would leave the pacer's window before the call leaves the platform's."""
    clock = FakeClock(start=0.0)
    pacer = EditPacer(clock=clock)
    granted = [await pacer.acquire(KEY, 0.2, 2) for _ in range(2)]  # 2 per 10 s
    assert granted == [0.0, 0.0]
    await clock.advance(3.0)
    pacer.answered(KEY, granted[0])  # that call's answer came back at t=3
    pacer.answered("never-used", 1.0)  # an unknown key is no error
    assert await grant_times(pacer, clock, 2, per_s=0.2, burst=2) == pytest.approx([10.0, 13.0])
    assert await pacer.acquire(KEY, 0.0, 1) is None  # unlimited: nothing to date


async def test_waiters_are_served_first_come_first_served() -> None:
    clock = FakeClock(start=0.0)
    pacer = EditPacer(clock=clock)
    order: list[int] = []

    async def one(i: int) -> None:
        await clock.sleep(i * 0.01)  # arrive in index order
        await pacer.acquire(KEY, 1.0, 2)
        order.append(i)

    await clock.run(asyncio.gather(*(one(i) for i in reversed(range(30)))))
    assert order == list(range(30))
    assert clock.now() == pytest.approx(28.0, abs=0.1)  # 2 at once, then 1 per second


async def test_a_fast_path_caller_cannot_jump_the_queue() -> None:
    clock = FakeClock(start=0.0)
    pacer = EditPacer(clock=clock)
    order: list[str] = []

    async def take(name: str) -> None:
        await pacer.acquire(KEY, 1.0, 5)
        order.append(name)

    for _ in range(5):
        await pacer.acquire(KEY, 1.0, 5)
    assert clock.now() == 0.0
    queued = asyncio.create_task(take("queued"))
    await settle()
    clock.t = 5.0  # tokens are back, but the queued task has not been woken yet
    newcomer = asyncio.create_task(take("newcomer"))
    await settle()
    assert order == []  # a token is free, yet the newcomer queued behind
    await clock.advance(0.0)
    assert queued.done() and newcomer.done() and order == ["queued", "newcomer"]


async def test_a_newcomer_queues_behind_a_waiter_that_has_not_woken_yet() -> None:
    clock = FakeClock(start=0.0)
    pacer = EditPacer(clock=clock)
    order: list[str] = []

    async def take(name: str) -> None:
        await pacer.acquire(KEY, 1.0, 1)
        order.append(name)

    await pacer.acquire(KEY, 1.0, 1)
    head = asyncio.create_task(take("head"))
    await settle()
    clock.t = 1.0  # the token is back before the head's sleep has been woken
    newcomer = asyncio.create_task(take("newcomer"))
    await clock.run(asyncio.gather(head, newcomer))
    assert order == ["head", "newcomer"] and clock.now() == 2.0


async def test_keys_never_wait_on_each_other() -> None:
    clock = FakeClock(start=0.0)
    pacer = EditPacer(clock=clock)
    busy = [asyncio.create_task(pacer.acquire("a", 1.0, 1)) for _ in range(20)]
    await settle()
    await pacer.acquire("b", 1.0, 1)  # returns without time passing
    assert clock.now() == 0.0
    await clock.run(pacer.acquire("b", 1.0, 1))  # its own next token, not "a"'s twentieth
    assert clock.now() == pytest.approx(1.0)
    await clock.run(asyncio.gather(*busy))
    assert clock.now() == pytest.approx(19.0)


async def test_cancelled_waiters_leave_the_queue() -> None:
    clock = FakeClock(start=0.0)
    pacer = EditPacer(clock=clock)
    await pacer.acquire(KEY, 1.0, 1)
    head = asyncio.create_task(pacer.acquire(KEY, 1.0, 1))
    middle = asyncio.create_task(pacer.acquire(KEY, 1.0, 1))
    last = asyncio.create_task(pacer.acquire(KEY, 1.0, 1))
    await settle()
    head.cancel()
    middle.cancel()
    await settle()
    await clock.advance(1.0)
    assert last.done() and head.cancelled() and middle.cancelled()
    assert clock.now() == 1.0


async def test_idle_keys_are_forgotten() -> None:
    clock = FakeClock(start=0.0)
    pacer = EditPacer(clock=clock)
    for i in range(5_000):
        await pacer.acquire(f"chan-{i}", 1.0, 5)
        if i % 100 == 99:
            await clock.advance(6.0)  # everyone's tokens come back
    assert pacer.tracked_keys < 300
    # Forgetting an idle key loses nothing: a busy one is still remembered.
    for _ in range(5):
        await pacer.acquire("hot", 1.0, 5)
    for i in range(500):
        await pacer.acquire(f"more-{i}", 1.0, 5)
    spent_at = clock.now()
    await clock.run(pacer.acquire("hot", 1.0, 5))
    assert clock.now() == pytest.approx(spent_at + 5.0)


async def test_changed_limits_apply_to_the_next_caller() -> None:
    clock = FakeClock(start=0.0)
    pacer = EditPacer(clock=clock)
    times = await grant_times(pacer, clock, 4, burst=2)
    assert times == pytest.approx([0.0, 0.0, 2.0, 2.0])
    await pacer.acquire(KEY, 1.0, 3)  # a bigger burst frees a token at once
    assert clock.now() == 2.0


# ----- the FakeClock itself -----


async def test_fake_clock_wakes_sleepers_in_deadline_order_and_chains() -> None:
    clock = FakeClock(start=0.0)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, *delays: float) -> None:
        for delay in delays:
            await clock.sleep(delay)
            woke.append((name, clock.now()))

    tasks = [asyncio.create_task(sleeper("a", 3, 1)), asyncio.create_task(sleeper("b", 2, 2))]
    await settle()
    await clock.advance(3.5)
    assert woke == [("b", 2.0), ("a", 3.0)]
    await clock.advance(1.0)
    assert woke == [("b", 2.0), ("a", 3.0), ("b", 4.0), ("a", 4.0)]
    await asyncio.gather(*tasks)
    assert clock.now() == 4.5 and clock.time() > 1_600_000_000


async def test_fake_clock_autoadvance_runs_minutes_instantly() -> None:
    clock = FakeClock(start=0.0, autoadvance=True)
    await clock.sleep(90.0)
    await asyncio.gather(clock.sleep(30.0), clock.sleep(10.0))
    assert clock.now() == 120.0
    await settle()
    assert clock.sleepers == 0


async def test_fake_clock_instant_sleep_jumps_and_records() -> None:
    clock = FakeClock(start=10.0, epoch=10.0, instant_sleep=True)
    await clock.sleep(2.5)
    await clock.sleep(0)
    await clock.sleep(60.0)
    assert clock.now() == clock.time() == 72.5
    assert clock.slept == [2.5, 0, 60.0] and clock.sleepers == 0
    with pytest.raises(ValueError):
        FakeClock(autoadvance=True, instant_sleep=True)
