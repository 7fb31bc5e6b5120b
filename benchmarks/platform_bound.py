"""What the platform's own windows allow: the final-text latency of an ideal bot.

The benchmarks compare the bot's "final text after the model's last token" with this
bound. The ideal bot makes only the calls a reply can't do without: its first text at
the model's first token (a post) and its final text at the model's last token (an
edit, or the post itself when the post could not go out before the answer ended).
It never spends a window on interim updates. Those calls are replayed, in the order
they are asked for, through the same windows the fake platform enforces; the delay
each final call gets is the least any bot could have had, given the model's timing.

A final call may go by any of several methods (Slack: ``chat.stopStream`` or
``chat.update``, each with its own per-minute window): the ideal bot picks, per reply,
the one that admits it first.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["Bucket", "FixedWindow", "Reply", "SlidingWindow", "Window", "final_delays"]


class Window:
    """A platform limit the replay goes through: ``admit(t)`` is the earliest time
    at or after ``t`` at which one more call fits, and records that call."""

    def admit(self, t: float) -> float:
        raise NotImplementedError

    def peek(self, t: float) -> float:
        """``admit`` without recording."""
        raise NotImplementedError


@dataclass
class SlidingWindow(Window):
    """At most ``limit`` calls in any ``window_s`` (Slack's per-minute tiers, as the fake
    Slack enforces them)."""

    limit: int
    window_s: float
    _log: deque[float] = field(default_factory=deque)

    def peek(self, t: float) -> float:
        inside = [at for at in self._log if at > t - self.window_s]
        if len(inside) < self.limit:
            return t
        return inside[-self.limit] + self.window_s

    def admit(self, t: float) -> float:
        at = self.peek(t)
        self._log.append(at)
        return at


@dataclass
class Bucket(Window):
    """A token bucket of ``limit`` refilled at ``limit / window_s`` per second (Slack's
    "1 message per second per channel, short bursts", as the fake Slack enforces it)."""

    limit: int
    window_s: float
    _tokens: float = math.nan
    _at: float = 0.0

    def _level(self, t: float) -> float:
        if math.isnan(self._tokens):
            return float(self.limit)
        rate = self.limit / self.window_s
        return min(float(self.limit), self._tokens + (t - self._at) * rate)

    def peek(self, t: float) -> float:
        t = max(t, self._at)
        level = self._level(t)
        return t if level >= 1.0 else t + (1.0 - level) * self.window_s / self.limit

    def admit(self, t: float) -> float:
        at = self.peek(t)
        self._tokens, self._at = self._level(at) - 1.0, at
        return at


@dataclass
class FixedWindow(Window):
    """``limit`` calls per window that starts at the first call (Discord's buckets, as
    the fake Discord enforces them)."""

    limit: int
    window_s: float
    _start: float = -math.inf
    _used: int = 0

    def peek(self, t: float) -> float:
        if t >= self._start + self.window_s or self._used < self.limit:
            return t
        return self._start + self.window_s

    def admit(self, t: float) -> float:
        at = self.peek(t)
        if at >= self._start + self.window_s:
            self._start, self._used = at, 0
        self._used += 1
        return at


@dataclass(frozen=True)
class Reply:
    """One reply: when the model sent its first and last token, and where it goes."""

    first_token: float
    last_token: float
    place: str  # what the post windows are keyed by (a channel, a thread)


def final_delays(
    replies: Sequence[Reply],
    post_windows: Callable[[str], Sequence[Window]],
    final_windows: Callable[[str], Sequence[Sequence[Window]]],
) -> list[float]:
    """For each reply, seconds from its last token to the ideal bot's final call.

    ``post_windows(place)``: every window a first post goes through. ``final_windows(place)``:
    the methods a final edit may use, each as the windows it goes through.
    """
    posted: dict[int, float] = {}
    for i in sorted(range(len(replies)), key=lambda i: replies[i].first_token):
        reply = replies[i]
        windows = post_windows(reply.place)
        at = reply.first_token
        while True:  # the earliest time every window admits
            later = max(w.peek(at) for w in windows)
            if later <= at:
                break
            at = later
        for window in windows:
            window.admit(at)
        posted[i] = at
    delays = [0.0] * len(replies)
    finals = [i for i in posted if posted[i] < replies[i].last_token]
    for i in sorted(finals, key=lambda i: replies[i].last_token):
        reply = replies[i]
        best: tuple[float, Sequence[Window]] | None = None
        for windows in final_windows(reply.place):
            at = reply.last_token
            while True:
                later = max(w.peek(at) for w in windows)
                if later <= at:
                    break
                at = later
            if best is None or at < best[0]:
                best = (at, windows)
        assert best is not None
        for window in best[1]:
            window.admit(best[0])
        delays[i] = best[0] - reply.last_token
    for i, at in posted.items():
        if at >= replies[i].last_token:  # the post itself carried the final text
            delays[i] = at - replies[i].last_token
    return delays
