"""Prometheus metrics behind a narrow interface: the only module that imports
``prometheus_client``, so the engine and adapters record facts, not metric types.

Each ``Metrics`` has its own ``CollectorRegistry`` (no global state: tests and several
runtimes in one process don't collide); ``bot.ops`` serves ``exposition()``.
"""

from __future__ import annotations

from importlib import metadata

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

from bot.ports import Clock, ReplySink
from bot.types import ReplyRef, TurnStatus

__all__ = ["CONTENT_TYPE", "OUTCOMES", "MeteredSink", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

OUTCOMES = ("complete", "interrupted", "failed", "refused")
"""How a reply ends: in full, cut short, with an error, or refused by the quota."""

# Chat replies: first text within a second or two, whole answers up to minutes.
_LATENCY_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0, 120.0, 300.0)
_WAIT_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
# A short answer is a post and its final edit; a long one at one edit a second, ~100.
_EDIT_BUCKETS = (0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 50.0, 100.0, 200.0)


def _version() -> str:
    try:
        return metadata.version("groqbot")
    except metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown"


class Metrics:
    """What the bot counts; every method is cheap and never raises into its caller."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._replies = Counter(
            "groqbot_replies", "Replies by platform and outcome.", ["platform", "outcome"],
            registry=r,
        )  # fmt: skip
        self._first_text = Histogram(
            "groqbot_reply_first_text_seconds",
            "From the message's arrival to the reply's first visible text.",
            ["platform"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self._complete = Histogram(
            "groqbot_reply_duration_seconds",
            "From the message's arrival to the reply's end, whatever the outcome.",
            ["platform"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self._in_flight = Gauge(
            "groqbot_replies_in_flight", "Replies being answered now.", ["platform"], registry=r
        )
        self._requests = Counter(
            "groqbot_model_requests", "Requests sent to the model API, by model.", ["model"],
            registry=r,
        )  # fmt: skip
        self._tokens = Counter(
            "groqbot_model_tokens",
            "Tokens by model and kind (prompt, completion), as reported or estimated.",
            ["model", "kind"], registry=r,
        )  # fmt: skip
        self._fallbacks = Counter(
            "groqbot_model_fallbacks",
            "Turns answered by another model of MODEL_FALLBACKS, by the model left, the "
            "model tried next and why.",
            ["from_model", "to_model", "reason"], registry=r,
        )  # fmt: skip
        self._upstream_429 = Counter(
            "groqbot_upstream_rate_limited", "429 answers from the model API.", registry=r
        )
        self._retries = Counter(
            "groqbot_upstream_retries", "Requests to the model API sent again.", registry=r
        )
        self._quota_waits = Histogram(
            "groqbot_quota_wait_seconds", "Waits the quota imposed before a request.",
            buckets=_WAIT_BUCKETS, registry=r,
        )  # fmt: skip
        self._cache = Counter(
            "groqbot_response_cache", "Response cache lookups (hit, miss) and answers stored.",
            ["event"], registry=r,
        )  # fmt: skip
        for event in ("hit", "miss", "store"):  # at 0 from the start, for rate queries
            self._cache.labels(event)
        self._platform_429 = Counter(
            "groqbot_platform_rate_limited",
            "429 answers from a chat platform, by platform and route (API path or method).",
            ["platform", "route"], registry=r,
        )  # fmt: skip
        self._edits = Histogram(
            "groqbot_reply_edits",
            "Calls that changed a reply's messages after posting them (edits, appends).",
            ["platform"], buckets=_EDIT_BUCKETS, registry=r,
        )  # fmt: skip
        self._conversations = Gauge(
            "groqbot_conversations", "Conversations in the store (counted at each scrape).",
            registry=r,
        )  # fmt: skip
        self._connected = Gauge(
            "groqbot_adapter_connected", "1 while the adapter can hear its platform.",
            ["adapter"], registry=r,
        )  # fmt: skip
        Info("groqbot_build", "The running version.", registry=r).info({"version": _version()})

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)

    # ----- replies -----

    def reply_started(self, platform: str) -> None:
        self._in_flight.labels(platform).inc()

    def first_text(self, platform: str, seconds: float) -> None:
        self._first_text.labels(platform).observe(seconds)

    def reply_finished(self, platform: str, outcome: str, seconds: float) -> None:
        """One reply ended (``outcome``: one of ``OUTCOMES``) ``seconds`` after it began."""
        self._in_flight.labels(platform).dec()
        self._replies.labels(platform, outcome).inc()
        self._complete.labels(platform).observe(seconds)

    # ----- the model API -----

    def model_request(self, model: str) -> None:
        self._requests.labels(model).inc()

    def tokens(self, model: str, prompt: int, completion: int) -> None:
        self._tokens.labels(model, "prompt").inc(prompt)
        self._tokens.labels(model, "completion").inc(completion)

    def fallback(self, from_model: str, to_model: str, reason: str) -> None:
        self._fallbacks.labels(from_model, to_model, reason).inc()

    def upstream_retry(self, *, rate_limited: bool) -> None:
        """A request is sent again (``rate_limited``: after a 429)."""
        self._retries.inc()
        if rate_limited:
            self._upstream_429.inc()

    def upstream_rate_limited(self) -> None:
        """A 429 that was not retried (retries are counted by ``upstream_retry``)."""
        self._upstream_429.inc()

    def quota_wait(self, seconds: float) -> None:
        """A request waited ``seconds`` for the quota to admit it (or refuse it)."""
        self._quota_waits.observe(seconds)

    # ----- the response cache -----

    def cache_lookup(self, *, hit: bool) -> None:
        """A cacheable request was looked up (failed lookups are not counted)."""
        self._cache.labels("hit" if hit else "miss").inc()

    def cache_stored(self) -> None:
        self._cache.labels("store").inc()

    # ----- adapters -----

    def adapter_connected(self, adapter: str, connected: bool) -> None:
        self._connected.labels(adapter).set(1 if connected else 0)

    def platform_rate_limited(self, platform: str, route: str) -> None:
        self._platform_429.labels(platform, route).inc()

    def reply_edits(self, platform: str, edits: int) -> None:
        self._edits.labels(platform).observe(edits)

    # ----- the store -----

    def conversations(self, count: int) -> None:
        self._conversations.set(count)


class MeteredSink:
    """A ``ReplySink`` that reports its reply to ``Metrics``: in flight from creation,
    first visible text at its first non-empty ``update``, and how it ended.

    ``refused`` is set by the engine when the quota refused the turn, so its ``fail``
    counts as "refused", not "failed".
    """

    __slots__ = (
        "_clock",
        "_ended",
        "_metrics",
        "_platform",
        "_shown",
        "_sink",
        "_started",
        "refused",
    )

    def __init__(self, sink: ReplySink, metrics: Metrics, platform: str, clock: Clock) -> None:
        self._sink, self._metrics, self._platform, self._clock = sink, metrics, platform, clock
        self._started = clock.now()
        self._shown = False
        self._ended = False
        self.refused = False
        metrics.reply_started(platform)

    @property
    def reply_ref(self) -> ReplyRef:
        return self._sink.reply_ref

    async def start(self) -> None:
        await self._sink.start()

    async def status(self, text: str) -> None:
        await self._sink.status(text)

    async def update(self, text_so_far: str) -> None:
        if not self._shown and text_so_far:
            self._shown = True
            self._metrics.first_text(self._platform, self._clock.now() - self._started)
        await self._sink.update(text_so_far)

    async def finish(self, text: str, status: TurnStatus) -> None:
        try:
            await self._sink.finish(text, status)
        finally:
            complete = status is TurnStatus.COMPLETE
            self._end("complete" if complete else "interrupted")

    async def fail(self, user_text: str) -> None:
        try:
            await self._sink.fail(user_text)
        finally:
            self._end("refused" if self.refused else "failed")

    def close(self) -> None:
        """The turn is over: a reply that never ended (cancelled) leaves the in-flight count."""
        if not self._ended:
            self._end("interrupted")

    def _end(self, outcome: str) -> None:
        if self._ended:
            return
        self._ended = True
        self._metrics.reply_finished(self._platform, outcome, self._clock.now() - self._started)
