"""The shared rate-limit primitives: a trailing window and a FIFO of waiters."""

from __future__ import annotations

import math

import pytest

from bot.ratelimit import TrailingWindow, Waiter, WaitQueue

# ----- TrailingWindow -----


def test_trailing_window_counts_each_use_for_one_window() -> None:
    w = TrailingWindow(3, 10)
    w.add(1, 0.0)
    w.add(2, 4.0)
    assert w.used(9.9) == 3
    assert w.used(10.0) == 2  # the first use is over exactly one window later
    assert w.clears_in(10.0) == pytest.approx(4.0)
    assert w.used(14.0) == 0 and w.clears_in(14.0) == 0


def test_trailing_window_wait_is_until_enough_uses_expire() -> None:
    w = TrailingWindow(3, 10)
    for at in (0.0, 1.0, 2.0):
        assert w.wait(1, at) == 0
        w.add(1, at)
    assert w.wait(1, 5.0) == pytest.approx(5.0)  # the use at 0 leaves at 10
    assert w.wait(2, 5.0) == pytest.approx(6.0)  # and the one at 1 at 11
    assert w.wait(1, 5.0, held=1) == pytest.approx(6.0)  # one unit held elsewhere
    assert w.wait(4, 5.0) == math.inf  # never fits, however long it waits
    assert w.wait(1, 5.0 + w.wait(1, 5.0)) == 0  # float slack: no second, tiny wait


def test_trailing_window_redate_counts_a_use_from_its_new_time_keeping_order() -> None:
    w = TrailingWindow(2, 10)
    w.add(1, 0.0)
    w.add(1, 1.0)
    w.redate(0.0, 4.0)  # the call granted at 0 was answered at 4
    assert w.used(10.5) == 2  # without the redate the use at 0 would be over
    assert w.wait(1, 10.5) == pytest.approx(0.5)  # the use at 1 leaves first
    assert w.clears_in(10.5) == pytest.approx(3.5)  # the one now at 4 last
    w.redate(7.0, 9.0)  # nothing logged at 7: no change
    w.redate(1.0, 0.5)  # never earlier
    assert w.used(10.9) == 2 and w.used(11.0) == 1


def test_trailing_window_never_admits_more_than_its_limit_in_any_window() -> None:
    w = TrailingWindow(5, 5)
    grants: list[float] = []
    t = 0.0
    while len(grants) < 40:
        t += w.wait(1, t)
        w.add(1, t)
        grants.append(t)
        t += 0.3
    assert max(sum(1 for u in grants if s <= u < s + 5 - 1e-6) for s in grants) == 5


def test_trailing_window_limit_and_length_may_change_keeping_the_log() -> None:
    w = TrailingWindow(5, 5)
    for _ in range(5):
        w.add(1, 0.0)
    w.limit = 2  # a smaller burst: three of the five must leave first
    assert w.wait(1, 1.0) == pytest.approx(4.0)
    w.limit, w.window_s = 6, 6
    assert w.wait(1, 1.0) == 0 and w.wait(2, 1.0) == pytest.approx(5.0)


def test_trailing_window_rejects_a_nonpositive_limit_or_window() -> None:
    with pytest.raises(ValueError):
        TrailingWindow(0, 10)
    with pytest.raises(ValueError):
        TrailingWindow(1, 0)


# ----- WaitQueue -----


def test_wait_queue_is_fifo_and_skips_waiters_that_left() -> None:
    queue = WaitQueue()
    woken: list[str] = []
    a = Waiter(lambda: woken.append("a"), 10)
    b = Waiter(lambda: woken.append("b"), 20)
    c = Waiter(lambda: woken.append("c"), 30)
    for waiter in (a, b, c):
        queue.join(waiter)
    assert (len(queue), queue.amount, woken) == (3, 60, [])  # joining wakes nobody
    queue.leave(b)  # gave up from the middle
    assert queue.head() is a and woken == ["a"]
    queue.leave(a)
    assert queue.head() is c and woken[-1] == "c"
    assert (len(queue), queue.amount) == (1, 30)
    queue.leave(c)
    queue.leave(c)  # twice is harmless
    assert (len(queue), queue.amount, queue.head(), bool(queue)) == (0, 0, None, False)
    queue.wake_head()  # nobody to wake
    assert woken == ["a", "c"]
