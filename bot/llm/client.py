"""``CompletionsClient``: chat completions over one pooled ``httpx.AsyncClient``.

Works with any OpenAI-compatible API (Groq by default). Errors arrive as
``bot.errors.UpstreamError`` subclasses (mapped in ``bot.llm.errors``); retryable ones
are retried with backoff (``bot.llm.retry``) only until the first token was yielded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import replace
from types import TracebackType
from typing import Self, TypeVar

import httpx
from pydantic import SecretStr

from bot.errors import (
    BadRequest,
    EmptyStream,
    ModelUnavailable,
    StreamInterrupted,
    UpstreamError,
    UpstreamServerError,
    UpstreamUnreachable,
)
from bot.llm.catalog import ModelCatalog, parse_models
from bot.llm.discovery import Discovery
from bot.llm.errors import (
    base_url_host,
    error_from_response,
    map_transport_errors,
    rate_limit_from_body,
)
from bot.llm.headers import snapshot_from_headers
from bot.llm.provider import Provider, ProviderKind
from bot.llm.retry import RetryPolicy
from bot.llm.sse import ChatStreamParser
from bot.llm.transport import AiohttpTransport
from bot.ports import Clock, RateLimitListener, RetryHook
from bot.settings import HOSTED_CONCURRENCY, Settings
from bot.types import (
    ChatEvent,
    ChatRequest,
    Finished,
    ModelInfo,
    RateLimitSnapshot,
    TextDelta,
)

__all__ = ["CompletionsClient", "build_body"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_USER_AGENT = "groqbot/0.1 (+httpx)"


def build_body(
    request: ChatRequest, *, stream: bool, cap_param: str = "max_completion_tokens"
) -> dict[str, object]:
    """The JSON body for ``/chat/completions``.

    Messages carry only ``role`` and ``content`` (Groq rejects other keys). Sampling
    parameters appear only when set; ``max_tokens`` goes out as ``cap_param``, the
    field the server honours (``Provider.output_cap_param``). ``request.extra`` is
    merged in but never overrides the fields above or the streaming flags.
    """
    body: dict[str, object] = {
        "model": request.model,
        "messages": [
            {
                "role": m.role,
                "content": m.content if isinstance(m.content, str) else list(m.content),
            }
            for m in request.messages
        ],
    }
    sampling = {
        "temperature": request.temperature,
        "top_p": request.top_p,
        cap_param: request.max_tokens,
        "frequency_penalty": request.frequency_penalty,
        "presence_penalty": request.presence_penalty,
    }
    body.update({k: v for k, v in sampling.items() if v is not None})
    for key, value in request.extra.items():
        body.setdefault(key, value)
    body.pop("stream_options", None)
    body["stream"] = stream
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def _closed_by_peer(error: UpstreamUnreachable) -> bool:
    """The server closed the connection (not a timeout of ours)."""
    cause = error.__cause__
    return isinstance(cause, httpx.TransportError) and not isinstance(cause, httpx.TimeoutException)


@asynccontextmanager
async def _closing(iterator: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """Close an async iterator on exit, so an abandoned body iterator is never left to GC."""
    try:
        yield iterator
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


class _IdleTimer:
    """Cancels the current task when one read of a stream has waited ``idle_s``.

    One timer per stream, re-armed only when it fires (at the earliest moment the read
    in progress could be over the limit), so a read costs two attribute stores, not a
    timer. It cancels only while ``reading``: the task is then awaiting that read, and
    the read's ``CancelledError`` handler asks ``expired()`` whether it was this timer.
    """

    __slots__ = ("_cancelling", "_fired", "_handle", "_idle_s", "_task", "loop", "reading", "since")

    def __init__(self, idle_s: float) -> None:
        self.loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._cancelling = self._task.cancelling() if self._task is not None else 0
        self._idle_s = idle_s
        self._fired = False
        self.reading = False
        self.since = self.loop.time()
        self._handle: asyncio.TimerHandle | None = self.loop.call_at(
            self.since + idle_s, self._check
        )

    def _check(self) -> None:
        now = self.loop.time()
        due = self.since + self._idle_s
        if self.reading and now >= due and self._task is not None:
            self._fired, self._handle = True, None
            self._task.cancel()
            return
        # Not reading: no read can expire before a full idle period from now.
        self._handle = self.loop.call_at(due if self.reading else now + self._idle_s, self._check)

    def expired(self) -> bool:
        """Whether a ``CancelledError`` came from this timer alone (then it is consumed)."""
        if not self._fired or self._task is None:
            return False
        self._fired = False
        return self._task.uncancel() <= self._cancelling

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class CompletionsClient:
    """``bot.ports.Completions`` for an OpenAI-compatible API, over one connection pool.

    ``stream`` yields ``TextDelta`` / ``ReasoningDelta`` and a final ``Finished``. Before
    the first delta it retries rate limits, 5xx, connection errors and stalls (calling
    ``on_retry`` first); after it, any break raises ``StreamInterrupted`` with the text
    yielded so far. Every chat response carrying rate-limit headers is reported to the
    rate-limit listeners (an error response once its body is read, with the limit a
    429's message names). The API key lives only in the pool's default headers.
    """

    def __init__(
        self,
        *,
        base_url: str,
        clock: Clock,
        api_key: SecretStr | None = None,
        timeout_s: float = 60.0,
        stream_idle_timeout_s: float = 30.0,
        max_retries: int = 3,
        retry_base_delay_s: float = 1.0,
        retry_max_delay_s: float = 20.0,
        models_ttl_s: float = 300.0,
        on_rate_limit: RateLimitListener | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 10,
        provider: ProviderKind | None = None,
        context_fallback: int | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._clock = clock
        key = api_key.get_secret_value() if api_key is not None else ""
        self._secrets: tuple[str, ...] = (key,) if key else ()
        self._idle_s = stream_idle_timeout_s
        self._policy = RetryPolicy(max_retries, retry_base_delay_s, retry_max_delay_s)
        self._listeners: list[RateLimitListener] = [on_rate_limit] if on_rate_limit else []
        headers = {"Accept": "application/json", "User-Agent": _USER_AGENT}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._http = httpx.AsyncClient(
            base_url=self._base_url + "/",
            headers=headers,
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            # aiohttp by default: about half the CPU per streamed event of httpx's own.
            transport=transport or AiohttpTransport(max_connections=max_connections),
        )
        self._discovery = Discovery(
            self._http, self._base_url, configured=provider, fallback_window=context_fallback
        )
        self._catalog = ModelCatalog(fetch=self._fetch_models, ttl_s=models_ttl_s, clock=clock)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, clock: Clock, on_rate_limit: RateLimitListener | None = None
    ) -> CompletionsClient:
        """A client configured from ``Settings``."""
        return cls(
            base_url=settings.api_base_url,
            api_key=settings.groq_api_key,
            timeout_s=settings.request_timeout_s,
            stream_idle_timeout_s=settings.stream_idle_timeout_s,
            max_retries=settings.max_retries,
            retry_base_delay_s=settings.retry_base_delay_s,
            retry_max_delay_s=settings.retry_max_delay_s,
            models_ttl_s=settings.models_cache_ttl_s,
            clock=clock,
            on_rate_limit=on_rate_limit,
            # Room for a /models fetch next to a full set of concurrent streams.
            max_connections=(settings.max_concurrent_requests or HOSTED_CONCURRENCY) + 2,
            provider=None
            if settings.api_provider == "auto"
            else ProviderKind(settings.api_provider),
            context_fallback=settings.context_token_budget,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self._base_url!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def provider(self) -> Provider | None:
        """The server kind: known from settings or the URL at once, else after the first
        model-list fetch (``models()``); None until then."""
        return self._discovery.provider

    def _cap_param(self) -> str:
        provider = self._discovery.provider
        # Unknown yet: max_tokens is the field every OpenAI-compatible server reads.
        return provider.output_cap_param if provider is not None else "max_tokens"

    def add_rate_limit_listener(self, listener: RateLimitListener) -> None:
        """Also report rate-limit snapshots to ``listener`` (e.g. ``QuotaGate.observe``)."""
        self._listeners.append(listener)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    # ----- chat -----

    async def stream(
        self,
        request: ChatRequest,
        *,
        on_retry: RetryHook | None = None,
        empty_is_overflow: bool = False,
    ) -> AsyncIterator[ChatEvent]:
        """Stream one completion; see the class docstring for retries and interruption.

        A 200 with nothing in it raises ``EmptyStream`` at once when ``empty_is_overflow``
        (the request is large for the window: llama.cpp answers an overflow so); else it
        is a server failure, retried like a 5xx.
        """
        body = build_body(request, stream=True, cap_param=self._cap_param())
        text: list[str] = []
        started = False
        attempt = 0
        while True:
            try:
                async with aclosing(self._stream_once(request.model, body)) as events:
                    async for event in events:
                        if isinstance(event, TextDelta):
                            text.append(event.text)
                        started = started or not isinstance(event, Finished)
                        yield event
                return
            except UpstreamError as exc:
                if started:
                    raise StreamInterrupted(
                        partial_text="".join(text),
                        detail=f"{type(exc).__name__}: {exc.detail or exc.user_text}",
                    ) from exc
                error = exc
                if isinstance(exc, EmptyStream) and not empty_is_overflow:
                    error = UpstreamServerError(detail=exc.detail)
                attempt += 1
                await self._backoff(error, attempt, on_retry)

    # ----- models -----

    async def models(self, *, refresh: bool = False) -> Sequence[ModelInfo]:
        """The live model list sorted by id, cached for ``models_ttl_s``."""
        return await self._catalog.get(refresh=refresh)

    # ----- internals -----

    async def _fetch_models(self) -> list[ModelInfo]:
        async def once() -> list[ModelInfo]:
            try:
                async with self._send("GET", "models", model=None) as response:
                    payload = await self._read_json(response)
                return await self._discovery.resolve(payload, parse_models(payload))
            except ModelUnavailable as exc:  # no /models here: the base URL itself is wrong
                raise BadRequest(
                    f"The API at {base_url_host(self._base_url)} has no /models endpoint; "
                    "check API_BASE_URL (it usually ends in /v1).",
                    status=exc.status,
                    detail=exc.detail,
                ) from exc

        return await self._with_retries(once, None)

    async def _stream_once(
        self, model: str, body: dict[str, object]
    ) -> AsyncGenerator[ChatEvent, None]:
        parser = ChatStreamParser(model=model, secrets=self._secrets)
        received = False
        async with (
            self._send("POST", "chat/completions", model=model, body=body) as response,
            _closing(response.aiter_bytes()) as chunks,
        ):
            # One idle timer and one error mapping for the whole body, not one per read:
            # they were a tenth of the CPU per event.
            idle = _IdleTimer(self._idle_s)
            try:
                with map_transport_errors(self._base_url):
                    while not parser.done:
                        idle.reading = True
                        idle.since = idle.loop.time()
                        try:
                            chunk: bytes | None = await anext(chunks)
                        except StopAsyncIteration:
                            chunk = None
                        except httpx.TransportError as exc:
                            if received or isinstance(exc, httpx.TimeoutException):
                                raise
                            chunk = None  # a 200 then a dropped connection: as good as empty
                        except asyncio.CancelledError:
                            if idle.expired():
                                raise self._stalled() from None
                            raise
                        idle.reading = False
                        if chunk is None and not received:
                            raise EmptyStream(detail="HTTP 200 with an empty body")
                        received = received or bool(chunk)
                        events = parser.feed(chunk) if chunk is not None else parser.finish()
                        if parser.done:
                            idle.cancel()
                            await self._drain(chunks)
                        for event in events:
                            yield event
                        parser.raise_failure()
                        if chunk is None:
                            break
            finally:
                idle.cancel()
        if not parser.done:
            raise UpstreamServerError(detail="the stream ended before data: [DONE]")

    def _stalled(self) -> UpstreamUnreachable:
        return UpstreamUnreachable(
            f"The model API at {base_url_host(self._base_url)} stopped responding; "
            "please try again.",
            detail=f"no stream data for {self._idle_s:g} s",
        )

    async def _next_chunk(self, chunks: AsyncIterator[bytes]) -> bytes | None:
        """The next body chunk, None at the end; a silence over the idle timeout raises."""
        with map_transport_errors(self._base_url):
            try:
                async with asyncio.timeout(self._idle_s):
                    return await anext(chunks)
            except StopAsyncIteration:
                return None
            except TimeoutError:
                raise self._stalled() from None

    async def _drain(self, chunks: AsyncIterator[bytes]) -> None:
        """Read to the end after ``[DONE]`` so the connection goes back to the pool."""
        with contextlib.suppress(UpstreamError):
            while await self._next_chunk(chunks) is not None:
                pass

    @asynccontextmanager
    async def _send(
        self, method: str, path: str, *, model: str | None, body: dict[str, object] | None = None
    ) -> AsyncIterator[httpx.Response]:
        """Send a request; yield the streaming response if 2xx, else raise the mapped error."""
        with map_transport_errors(self._base_url):
            request = self._http.build_request(method, path, json=body)
            response = await self._http.send(request, stream=True)
        try:
            if response.is_success:
                if model is not None:
                    self._observe(response, model)
            else:
                content: bytes | None = None
                try:
                    with map_transport_errors(self._base_url):
                        content = await response.aread()
                finally:
                    # After the body: a 429's message names the limit and its use.
                    if model is not None:
                        self._observe(response, model, content)
                raise error_from_response(
                    response.status_code,
                    response.headers,
                    content,
                    model=model,
                    secrets=self._secrets,
                )
            yield response
        finally:
            with contextlib.suppress(httpx.HTTPError):
                await response.aclose()

    async def _read_json(self, response: httpx.Response) -> object:
        with map_transport_errors(self._base_url):
            content = await response.aread()
        try:
            return json.loads(content)
        except ValueError:
            raise UpstreamServerError(detail="the API answered with invalid JSON") from None

    def _observe(self, response: httpx.Response, model: str, body: bytes | None = None) -> None:
        """Report the response's rate-limit headers to the listeners, with what an error
        ``body`` adds: the limit a 429's (or 413's) message names, its wait."""
        at = self._clock.time()
        status = response.status_code
        snapshot = snapshot_from_headers(response.headers, model=model, at=at, status=status)
        if body is not None and status in (413, 429):
            exceeded, retry_after = rate_limit_from_body(body)
            if exceeded is not None:
                snapshot = replace(
                    snapshot or RateLimitSnapshot(model=model, at=at, status=status),
                    exceeded=exceeded.dimension,
                    exceeded_limit=exceeded.limit,
                    exceeded_used=exceeded.used,
                    exceeded_requested=exceeded.requested,
                )
            if retry_after is not None and (snapshot is None or snapshot.retry_after_s is None):
                snapshot = replace(
                    snapshot or RateLimitSnapshot(model=model, at=at, status=status),
                    retry_after_s=retry_after,
                )
        if snapshot is None:
            return
        for listener in list(self._listeners):
            try:
                listener(snapshot)
            except Exception:
                # A listener belongs to another component; its bug must not fail a chat.
                log.exception("rate-limit listener %r failed", listener)

    async def _with_retries(
        self, call: Callable[[], Awaitable[T]], on_retry: RetryHook | None
    ) -> T:
        attempt = 0
        while True:
            try:
                return await call()
            except UpstreamError as exc:
                attempt += 1
                await self._backoff(exc, attempt, on_retry)

    async def _backoff(
        self, error: UpstreamError, attempt: int, on_retry: RetryHook | None
    ) -> None:
        """Re-raise ``error`` unless retry ``attempt`` is allowed; else wait before it."""
        if not self._policy.should_retry(error, attempt):
            raise error
        delay = self._policy.delay(attempt, error)
        log.info("retry %d in %.2f s after %s: %s", attempt, delay, type(error).__name__, error)
        if on_retry is not None:
            await on_retry(error, attempt, delay)
        await self._clock.sleep(delay)
