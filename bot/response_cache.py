"""The response cache's policy: which requests it answers, their key, and the replay.

Chat turns rarely repeat, so the cache is correct first and useful second. The key is
the sha256 of the base URL and the JSON body the completions client sends
(``bot.llm.client.build_body``: model, the exact messages, every sampling, length and
reasoning parameter), so any difference in what the model would be asked is a miss.
Only requests deterministic by configuration are answered from it (CACHE_MODE):
``deterministic`` (the default) means sent with temperature 0, which only an operator's
``TEMPERATURE=0`` does; ``always`` caches whatever the temperature, by the operator's
choice; ``off`` never. The entries live in the store (``bot.ports.ResponseCache``),
so they survive restarts and are shared by every process on the same database.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from bot.llm.client import build_body
from bot.types import ChatRequest

__all__ = [
    "CACHED_NOTE",
    "REPLAY_INTERVAL_S",
    "CacheStats",
    "cache_key",
    "cacheable",
    "replay_prefixes",
]

CACHED_NOTE = "⚡ Cached answer: asked before with the same settings; it used no quota."
# A hit is shown growing like a stream (about REPLAY_PIECES updates, ~1 s in all), so it
# arrives as users know answers to arrive; the sink's own pacing decides what is drawn.
REPLAY_PIECES = 12
REPLAY_INTERVAL_S = 0.08
# The cap's field name varies by server (``Provider.output_cap_param``) but not its
# meaning, and the base URL is in the key: one fixed name keeps the key stable from
# before the server's kind is known to after.
_KEY_CAP_PARAM = "max_completion_tokens"


def cache_key(base_url: str, request: ChatRequest) -> str:
    """The sha256 hex of everything ``request`` sends to the API at ``base_url``."""
    body = build_body(request, stream=False, cap_param=_KEY_CAP_PARAM)
    blob = json.dumps({"base_url": base_url, "body": body}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def cacheable(mode: str, request: ChatRequest) -> bool:
    """Whether CACHE_MODE ``mode`` lets ``request`` be answered from, and stored in, the cache."""
    if mode == "always":
        return True
    return mode == "deterministic" and request.temperature == 0


def replay_prefixes(text: str, pieces: int = REPLAY_PIECES) -> list[str]:
    """At most ``pieces`` growing prefixes of ``text``, the last being ``text`` itself:
    the updates of a replayed answer. Each other one ends before a space or line break
    when one is near its even share of the text, so no update shows half a word."""
    prefixes: list[str] = []
    step = len(text) / max(1, pieces)
    for i in range(1, pieces):
        end = round(step * i)
        start = max(0, end - int(step) // 2)
        space = max(text.rfind(" ", start, end), text.rfind("\n", start, end))
        prefix = text[: space if space > 0 else end].rstrip()
        if prefix and (not prefixes or len(prefix) > len(prefixes[-1])):
            prefixes.append(prefix)
    if text and (not prefixes or prefixes[-1] != text):
        prefixes.append(text)
    return prefixes


@dataclass(slots=True)
class CacheStats:
    """This process's lookups since it started, for the admins' ``/usage``."""

    hits: int = 0
    misses: int = 0
    stores: int = 0
    failures: int = 0

    def report(self, entries: int | None) -> str:
        """One line: hit rate and entries (``None``: the store couldn't count them)."""
        lookups = self.hits + self.misses
        rate = f" ({self.hits / lookups:.0%})" if lookups else ""
        stored = "unknown" if entries is None else f"{entries:,}"
        failed = f", {self.failures} failed" if self.failures else ""
        return (
            f"Response cache since start: {self.hits} hit(s) of {lookups} lookup(s){rate}, "
            f"{self.stores} answer(s) stored{failed}; {stored} entries now."
        )
