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

__all__ = ["CONTENT_TYPE", "OUTCOMES", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

OUTCOMES = ("complete", "interrupted", "failed", "refused")
"""How a reply ends: in full, cut short, with an error, or refused by the quota."""

# Chat replies: first text within a second or two, whole answers up to minutes.
_LATENCY_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0, 120.0, 300.0)
_WAIT_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)


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

    def upstream_retry(self, *, rate_limited: bool) -> None:
        """A request is sent again (``rate_limited``: after a 429)."""
        self._retries.inc()
        if rate_limited:
            self._upstream_429.inc()

    def upstream_rate_limited(self) -> None:
        """A 429 that was not retried (retries are counted by ``upstream_retry``)."""
        self._upstream_429.inc()

    def quota_wait(self, seconds: float) -> None:
        self._quota_waits.observe(seconds)

    # ----- adapters -----

    def adapter_connected(self, adapter: str, connected: bool) -> None:
        self._connected.labels(adapter).set(1 if connected else 0)
