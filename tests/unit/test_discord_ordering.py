"""The Discord adapter's per-channel turnstile: order, independence, cleanup."""

from __future__ import annotations

import asyncio

from adapters.discord.ordering import Turnstile


async def test_each_message_waits_for_the_one_ahead_in_its_channel_only() -> None:
    line = Turnstile()
    first, second, other = line.ticket(1), line.ticket(1), line.ticket(2)
    waiting = asyncio.create_task(second.wait())
    await other.wait()  # another channel: no wait
    await asyncio.sleep(0)
    assert not waiting.done()
    first.pass_on()
    await asyncio.wait_for(waiting, 1)
    second.pass_on()
    other.pass_on()
    assert len(line) == 0  # every line empty: nothing kept


async def test_a_message_that_needs_no_order_still_keeps_later_ones_behind_earlier_ones() -> None:
    line = Turnstile()
    slow, new_thread, follow = line.ticket(1), line.ticket(1), line.ticket(1)
    new_thread.pass_on()  # it opened its own conversation: it does not wait
    waiting = asyncio.create_task(follow.wait())
    await asyncio.sleep(0)
    assert not waiting.done()  # but the message after it still waits for the slow one
    slow.pass_on()
    slow.pass_on()  # idempotent
    await asyncio.wait_for(waiting, 1)
    follow.pass_on()
    assert len(line) == 0


async def test_a_cancelled_waiter_does_not_break_the_line() -> None:
    line = Turnstile()
    first, second, third = line.ticket(5), line.ticket(5), line.ticket(5)
    waiter = asyncio.create_task(second.wait())
    await asyncio.sleep(0)
    waiter.cancel()
    second.pass_on()  # its task ended (cancelled): it gives its place up
    waiting = asyncio.create_task(third.wait())
    await asyncio.sleep(0)
    assert not waiting.done()  # the first message has still not passed
    first.pass_on()
    await asyncio.wait_for(waiting, 1)
    third.pass_on()
    assert len(line) == 0
