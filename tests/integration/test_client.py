"""CompletionsClient over real sockets to the fake Groq server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from bot.errors import (
    AuthenticationFailed,
    BadRequest,
    ContextTooLong,
    ModelUnavailable,
    RequestTooLarge,
    StreamInterrupted,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamUnreachable,
)
from bot.llm.client import CompletionsClient
from bot.ports import SystemClock
from bot.settings import Settings
from bot.types import (
    ChatEvent,
    ChatMessage,
    ChatRequest,
    Finished,
    RateLimitSnapshot,
    ReasoningDelta,
    TextDelta,
)
from tests.fakes.clock import FakeClock
from tests.fakes.groq_server import FILLER, FakeGroq

LLAMA = "llama-3.1-8b-instant"
OSS = "openai/gpt-oss-20b"
QWEN = "qwen/qwen3-32b"


MakeClient = Callable[..., CompletionsClient]


@pytest.fixture
async def make_client(fake_groq: FakeGroq) -> AsyncIterator[MakeClient]:
    """Build clients for the fake (tiny delays, short idle timeout); all closed afterwards."""
    clients: list[CompletionsClient] = []

    def build(**overrides: Any) -> CompletionsClient:
        values: dict[str, Any] = {
            "base_url": fake_groq.base_url,
            "api_key": SecretStr(fake_groq.api_key or ""),
            "clock": FakeClock(instant_sleep=True),
            "timeout_s": 5.0,
            "stream_idle_timeout_s": 0.3,
            "max_retries": 3,
            "retry_base_delay_s": 0.01,
            "retry_max_delay_s": 0.2,
        }
        values.update(overrides)
        client = CompletionsClient(**values)
        clients.append(client)
        return client

    yield build
    for client in clients:
        await client.aclose()


def ask(text: str = "hello there", model: str = LLAMA, **fields: Any) -> ChatRequest:
    messages = (
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "first"),
        ChatMessage("assistant", "ok"),
        ChatMessage("user", text),
    )
    return ChatRequest(model=model, messages=messages, **fields)


async def collect(
    client: CompletionsClient, request: ChatRequest, **kwargs: Any
) -> list[ChatEvent]:
    return [event async for event in client.stream(request, **kwargs)]


def text_of(events: list[ChatEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


class RetryLog:
    """An ``on_retry`` hook recording (error class, attempt, delay)."""

    def __init__(self) -> None:
        self.calls: list[tuple[type[UpstreamError], int, float]] = []

    async def __call__(self, error: UpstreamError, attempt: int, delay: float) -> None:
        self.calls.append((type(error), attempt, delay))

    @property
    def attempts(self) -> list[int]:
        return [attempt for _, attempt, _ in self.calls]


# ----- happy path -----


async def test_stream_arrives_in_order_and_complete(
    fake_groq: FakeGroq, make_client: MakeClient
) -> None:
    fake_groq.reply_words = 40
    events = await collect(make_client(), ask("tell me"))
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 40, "small chunks, streamed one by one"
    expected = "turns=2 last=tell me model=llama-3.1-8b-instant " + " ".join(FILLER * 4)
    assert text_of(events) == expected
    assert isinstance(events[-1], Finished)
    assert [type(e) for e in events[:-1]] == [TextDelta] * len(events[:-1])
    prompt_chars = len("Be brief.") + len("first") + len("ok") + len("tell me")
    usage = events[-1].usage
    assert usage is not None and usage.prompt_tokens == math.ceil(prompt_chars / 4)
    assert usage.completion_tokens == math.ceil(len(expected) / 4)
    assert events[-1].finish_reason == "stop"


async def test_request_body_is_what_groq_accepts(
    fake_groq: FakeGroq, make_client: MakeClient
) -> None:
    image = ({"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {}})
    request = ChatRequest(
        model=OSS,
        messages=(ChatMessage("system", "sys"), ChatMessage("user", image)),
        temperature=0.5,
        max_tokens=77,
        extra={"include_reasoning": False, "reasoning_effort": "low", "stream": False},
    )
    client = make_client()
    await client.models()  # tells the client it talks to Groq: max_completion_tokens
    events = await collect(client, request)
    assert not [e for e in events if isinstance(e, ReasoningDelta)]
    assert "last=what is this" in text_of(events)
    sent = fake_groq.requests[-1]
    assert sent["body"] == {
        "model": OSS,
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": [dict(p) for p in image]},
        ],
        "temperature": 0.5,
        "max_completion_tokens": 77,
        "include_reasoning": False,
        "reasoning_effort": "low",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert sent["headers"]["Authorization"] == f"Bearer {fake_groq.api_key}"


@pytest.mark.parametrize(
    ("model", "extra", "reasoning", "think_in_text"),
    [
        (OSS, {}, True, False),
        (OSS, {"include_reasoning": False}, False, False),
        (QWEN, {"reasoning_format": "parsed"}, True, False),
        (QWEN, {"reasoning_format": "raw"}, False, True),
        (QWEN, {"reasoning_format": "hidden"}, False, False),
    ],
)
async def test_reasoning_variants(
    make_client: MakeClient,
    model: str,
    extra: dict[str, object],
    reasoning: bool,
    think_in_text: bool,
) -> None:
    events = await collect(make_client(), ask(model=model, extra=extra))
    thoughts = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    assert bool(thoughts) is reasoning
    if reasoning:  # reasoning streams before the answer
        first_text = next(i for i, e in enumerate(events) if isinstance(e, TextDelta))
        last_thought = max(i for i, e in enumerate(events) if isinstance(e, ReasoningDelta))
        assert last_thought < first_text
    assert text_of(events).startswith("<think>") is think_in_text
    assert "model=" + model in text_of(events)


# ----- faults before the first token -----


@pytest.mark.parametrize(
    ("fault", "cls"),
    [
        ("401", AuthenticationFailed),
        ("404", ModelUnavailable),
        ("context_length_exceeded", ContextTooLong),
        ("model_decommissioned", ModelUnavailable),
        ("413", RequestTooLarge),
    ],
)
async def test_client_errors_are_never_retried(
    fake_groq: FakeGroq, make_client: MakeClient, fault: str, cls: type[UpstreamError]
) -> None:
    fake_groq.script(fault, times=5)
    hook = RetryLog()
    with pytest.raises(cls) as caught:
        await collect(make_client(), ask(), on_retry=hook)
    assert len(fake_groq.chat_requests) == 1
    assert hook.calls == []
    assert caught.value.user_text and "\n" not in caught.value.user_text


@pytest.mark.parametrize(
    ("fault", "params", "cls"),
    [
        ("429", {"retry_after": 0.01}, UpstreamRateLimited),
        ("500", {}, UpstreamServerError),
        ("503", {}, UpstreamServerError),
        ("drop", {"after_tokens": 0}, UpstreamUnreachable),
        ("stall", {"after_tokens": 0, "seconds": 3}, UpstreamUnreachable),
        ("error_event", {"after_tokens": 0}, UpstreamServerError),
    ],
)
async def test_retryable_faults_before_first_token_are_retried(
    fake_groq: FakeGroq,
    make_client: MakeClient,
    fault: str,
    params: dict[str, Any],
    cls: type[UpstreamError],
) -> None:
    fake_groq.script(fault, times=2, **params)
    hook = RetryLog()
    events = await collect(make_client(), ask(), on_retry=hook)
    assert text_of(events).startswith("turns=2 last=hello there")
    assert len(fake_groq.chat_requests) == 3
    assert hook.attempts == [1, 2]
    assert {c for c, _, _ in hook.calls} == {cls}


async def test_retries_are_bounded(fake_groq: FakeGroq, make_client: MakeClient) -> None:
    fake_groq.script("503", times=10)
    hook = RetryLog()
    client = make_client(max_retries=2)
    with pytest.raises(UpstreamServerError):
        await collect(client, ask(), on_retry=hook)
    assert len(fake_groq.chat_requests) == 3
    assert hook.attempts == [1, 2]
    assert all(0 <= delay <= 0.2 for _, _, delay in hook.calls)


async def test_wrong_key_is_rejected_once(fake_groq: FakeGroq, make_client: MakeClient) -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        await collect(make_client(api_key=SecretStr("gsk_wrong_key_1234567890")), ask())
    assert len(fake_groq.chat_requests) == 1
    assert "GROQ_API_KEY" in caught.value.user_text


# ----- breaks after the first token -----


@pytest.mark.parametrize(
    ("fault", "params"),
    [
        ("drop", {"after_tokens": 4}),
        ("stall", {"after_tokens": 4, "seconds": 3}),
        ("error_event", {"after_tokens": 4}),
    ],
)
async def test_breaks_after_first_token_raise_interrupted_without_retry(
    fake_groq: FakeGroq, make_client: MakeClient, fault: str, params: dict[str, Any]
) -> None:
    fake_groq.reply_words = 30
    fake_groq.script(fault, **params)
    hook = RetryLog()
    seen: list[ChatEvent] = []
    with pytest.raises(StreamInterrupted) as caught:
        async for event in make_client().stream(ask(), on_retry=hook):
            seen.append(event)
    assert len(fake_groq.chat_requests) == 1, "never retried after the first token"
    assert hook.calls == []
    # The fake's first 4 pieces: "turns=2 ", "last=hel", "lo ", "there ".
    assert caught.value.partial_text == text_of(seen) == "turns=2 last=hello there "
    assert "cut off" in caught.value.user_text


async def test_interruption_after_reasoning_only_is_not_retried(
    fake_groq: FakeGroq, make_client: MakeClient
) -> None:
    fake_groq.script("drop", after_tokens=2)  # gpt-oss streams reasoning first
    with pytest.raises(StreamInterrupted) as caught:
        await collect(make_client(), ask(model=OSS))
    assert caught.value.partial_text == ""
    assert len(fake_groq.chat_requests) == 1


async def test_stream_ending_without_done() -> None:
    chunk = {"choices": [{"index": 0, "delta": {"content": "half"}, "finish_reason": None}]}
    body = f"data: {json.dumps(chunk)}\n\n".encode()
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        content = body if calls > 1 else b": nothing yet\n\n"
        return httpx.Response(200, content=content, headers={"content-type": "text/event-stream"})

    async with CompletionsClient(
        base_url="http://fake.invalid/v1",
        clock=FakeClock(instant_sleep=True),
        transport=httpx.MockTransport(handler),
        retry_base_delay_s=0.0,
    ) as client:
        with pytest.raises(StreamInterrupted) as caught:
            await collect(client, ask())
    assert calls == 2, "the empty stream was retried, the half answer was not"
    assert caught.value.partial_text == "half"


# ----- rate limits -----


async def test_429_retry_after_is_honoured(fake_groq: FakeGroq, make_client: MakeClient) -> None:
    clock = FakeClock(instant_sleep=True)
    hook = RetryLog()
    client = make_client(clock=clock)
    fake_groq.script("429", retry_after=0.05)
    await collect(client, ask(), on_retry=hook)
    fake_groq.script("429", retry_after=0.07, message_only=True)
    await collect(client, ask(), on_retry=hook)
    assert clock.slept == [0.05, 0.07]
    assert hook.calls == [(UpstreamRateLimited, 1, 0.05), (UpstreamRateLimited, 1, 0.07)]


async def test_429_retry_after_in_real_time(fake_groq: FakeGroq, settings_factory: Any) -> None:
    settings: Settings = settings_factory()
    fake_groq.script("429", retry_after=0.1)
    async with CompletionsClient.from_settings(settings, clock=SystemClock()) as client:
        await collect(client, ask())
    first, second = fake_groq.chat_requests
    assert second["at"] - first["at"] >= 0.1


async def test_retry_after_beyond_the_cap_fails_fast(
    fake_groq: FakeGroq, make_client: MakeClient
) -> None:
    fake_groq.script("429", retry_after=30)
    with pytest.raises(UpstreamRateLimited) as caught:
        await collect(make_client(), ask())
    assert caught.value.retry_after_s == 30
    assert "30 s" in caught.value.user_text
    assert len(fake_groq.chat_requests) == 1


async def test_rate_limit_listeners_get_snapshots(
    fake_groq: FakeGroq, make_client: MakeClient
) -> None:
    fake_groq.limit_rpd, fake_groq.limit_tpm = 1000, 6000
    first: list[RateLimitSnapshot] = []
    second: list[RateLimitSnapshot] = []

    def broken(snapshot: RateLimitSnapshot) -> None:
        raise RuntimeError("listener bug")

    clock = FakeClock(instant_sleep=True)
    client = make_client(clock=clock, on_rate_limit=first.append)
    client.add_rate_limit_listener(broken)
    client.add_rate_limit_listener(second.append)
    await collect(client, ask())
    clock.t += 5
    await collect(client, ask(model=OSS))
    fake_groq.script("429", retry_after=0.01)
    await collect(client, ask())
    assert first == second and len(first) == 4  # ok, ok, 429, ok
    a, b, limited, _ = first
    # Stamped in epoch time (clock.time()), the quota's time base, not monotonic time.
    assert (a.model, b.model, a.at, b.at) == (LLAMA, OSS, 1_700_000_000.0, 1_700_000_005.0)
    assert (a.limit_requests, a.remaining_requests, a.limit_tokens) == (1000, 999, 6000)
    assert a.remaining_tokens is not None and a.remaining_tokens < 6000
    assert a.reset_tokens_s is not None and 0 < a.reset_tokens_s <= 60
    assert limited.retry_after_s == pytest.approx(0.01)
    assert (await client.models()) and len(first) == 4, "/models is not a chat response"
    # A 429 is reported once its body is read: the limit its message names, and the
    # wait it gives when no retry-after header does.
    assert (a.status, limited.status) == (200, 429)
    assert (limited.exceeded, limited.exceeded_limit) == ("tpm", 6000)
    assert (limited.exceeded_used, limited.exceeded_requested) == (6000, 100)
    fake_groq.script("429", retry_after=0.02, message_only=True)
    await collect(client, ask())
    assert first[4].retry_after_s == pytest.approx(0.02) and first[4].exceeded == "tpm"


async def test_enforced_limits_answer_real_429_and_413(
    fake_groq: FakeGroq, make_client: MakeClient
) -> None:
    clock = FakeClock(instant_sleep=True)
    fake_groq.clock = clock.now  # one timeline: the client's retry sleep moves the fake's minute
    fake_groq.enforce_rpm, fake_groq.limit_rpm = True, 2
    client = make_client(clock=clock, retry_max_delay_s=120)
    for _ in range(3):
        await collect(client, ask())
    assert fake_groq.count_429 == 1
    assert len(fake_groq.chat_requests) == 4, "the third request waited and was retried"
    # Two requests fill the 2 RPM bucket, which refills one request every 30 s.
    assert clock.slept == [30.0], "waited exactly the retry-after the fake computed"
    fake_groq.enforce_tpm, fake_groq.limit_tpm = True, 100
    with pytest.raises(RequestTooLarge):
        await collect(client, ask(max_tokens=500))
    assert len(fake_groq.chat_requests) == 5


# ----- models -----


async def test_models_cached_within_ttl_and_refreshed_after(
    fake_groq: FakeGroq, make_client: MakeClient
) -> None:
    clock = FakeClock(instant_sleep=True)
    client = make_client(clock=clock, models_ttl_s=60)

    def gets() -> int:
        return len([r for r in fake_groq.requests if r["path"].endswith("/models")])

    models = await client.models()
    assert [m.id for m in models] == sorted(m.id for m in fake_groq.models)
    oss = next(m for m in models if m.id == "openai/gpt-oss-120b")
    assert (oss.context_window, oss.max_completion_tokens) == (131072, 65536)
    assert oss.owned_by == "OpenAI" and oss.active
    assert gets() == 1
    clock.t += 59
    await client.models()
    assert gets() == 1
    clock.t += 2
    fake_groq.models = fake_groq.models[:1]
    assert len(await client.models()) == 1
    assert gets() == 2
    await client.models(refresh=True)
    assert gets() == 3


async def test_stale_models_served_when_refresh_fails(
    fake_groq: FakeGroq, make_client: MakeClient
) -> None:
    clock = FakeClock(instant_sleep=True)
    client = make_client(clock=clock, models_ttl_s=10, max_retries=0)
    before = await client.models()
    clock.t += 11
    fake_groq.script("500", times=3, endpoint="models")
    assert await client.models() == before
    with pytest.raises(UpstreamServerError):
        await client.models(refresh=True)


async def test_models_404_points_at_the_base_url(
    fake_groq: FakeGroq, make_client: MakeClient
) -> None:
    client = make_client(base_url=fake_groq.base_url.removesuffix("/openai/v1"))
    with pytest.raises(BadRequest) as caught:
        await client.models()
    assert "API_BASE_URL" in caught.value.user_text and "127.0.0.1" in caught.value.user_text


async def test_models_without_a_window_get_a_conservative_default() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        data = [
            {"id": "gpt-4o", "object": "model", "created": 1, "owned_by": "openai"},
            {"id": "llama3:8b", "object": "model", "created": 1, "owned_by": "library"},
        ]
        return httpx.Response(200, json={"object": "list", "data": data})

    async with CompletionsClient(
        base_url="http://fake.invalid/v1",
        clock=FakeClock(instant_sleep=True),
        transport=httpx.MockTransport(handler),
    ) as client:
        models = await client.models()
    assert [
        (m.id, m.context_window, m.context_source, m.max_completion_tokens, m.active)
        for m in models
    ] == [
        ("gpt-4o", 4096, "default", None, True),
        ("llama3:8b", 4096, "default", None, True),
    ]


# ----- connections and secrets -----


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_unreachable_base_url_fails_after_retries(make_client: MakeClient) -> None:
    port = unused_port()
    hook = RetryLog()
    client = make_client(base_url=f"http://127.0.0.1:{port}/openai/v1", max_retries=2)
    started = time.monotonic()
    with pytest.raises(UpstreamUnreachable) as caught:
        await collect(client, ask(), on_retry=hook)
    assert hook.attempts == [1, 2]
    assert f"127.0.0.1:{port}" in caught.value.user_text
    assert time.monotonic() - started < 5


async def test_one_connection_pool_is_reused(fake_groq: FakeGroq, make_client: MakeClient) -> None:
    client = make_client()
    await client.models()
    for _ in range(5):
        await collect(client, ask())
    assert len(fake_groq.peer_ports) == 1, fake_groq.peer_ports
    await asyncio.gather(*(collect(client, ask()) for _ in range(3)))
    assert len(fake_groq.peer_ports) <= 3


async def test_early_exit_closes_cleanly_and_the_client_keeps_working(
    fake_groq: FakeGroq, make_client: MakeClient
) -> None:
    fake_groq.reply_words = 50
    client = make_client()
    stream = client.stream(ask())
    assert isinstance(await anext(stream), TextDelta)
    await stream.aclose()  # type: ignore[attr-defined]
    assert text_of(await collect(client, ask())).startswith("turns=2")


async def test_the_key_never_leaks(fake_groq: FakeGroq, make_client: MakeClient) -> None:
    key = fake_groq.api_key or ""
    client = make_client()
    assert key not in repr(client)
    fake_groq.script("401")
    with pytest.raises(AuthenticationFailed) as auth:
        await collect(client, ask())

    def echo(request: httpx.Request) -> httpx.Response:  # a server echoing the credential
        header = request.headers["authorization"]
        return httpx.Response(400, json={"error": {"message": f"bad {header}", "type": "x"}})

    async with CompletionsClient(
        base_url="http://fake.invalid/v1",
        api_key=SecretStr(key),
        clock=FakeClock(instant_sleep=True),
        transport=httpx.MockTransport(echo),
    ) as echoing:
        with pytest.raises(BadRequest) as bad:
            await collect(echoing, ask())
    for error in (auth.value, bad.value):
        for text in (str(error), repr(error), error.user_text, error.detail):
            assert key not in text


# ----- the fake itself behaves like Groq -----


async def test_fake_rejects_what_groq_rejects(fake_groq: FakeGroq, make_client: MakeClient) -> None:
    auth = {"Authorization": f"Bearer {fake_groq.api_key}"}
    url = fake_groq.base_url + "/chat/completions"
    leaked = {"role": "assistant", "content": "a", "reasoning": "secret thoughts"}
    body = {"model": OSS, "messages": [{"role": "user", "content": "q"}, leaked]}
    async with httpx.AsyncClient() as raw:
        extra_key = await raw.post(url, json=body, headers=auth)
        no_auth = await raw.post(url, json=body)
    assert extra_key.status_code == 400
    assert "'reasoning' is unsupported" in extra_key.json()["error"]["message"]
    assert no_auth.status_code == 401
    assert no_auth.json()["error"]["code"] == "invalid_api_key"
    client = make_client()
    with pytest.raises(BadRequest) as bad:
        await collect(client, ask(model=OSS, extra={"reasoning_format": "parsed"}))
    assert "reasoning_format" in bad.value.user_text
    with pytest.raises(ModelUnavailable) as retired:
        await collect(client, ask(model="gemma2-9b-it"))
    assert "`gemma2-9b-it` has been retired" in retired.value.user_text
    with pytest.raises(ContextTooLong):
        await collect(client, ask("x" * 600_000))


async def test_fake_stream_has_groq_chunk_shape(fake_groq: FakeGroq) -> None:
    body = {
        "model": LLAMA,
        "messages": [{"role": "user", "content": "shape"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with httpx.AsyncClient() as raw:
        response = await raw.post(
            fake_groq.base_url + "/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {fake_groq.api_key}"},
        )
    assert response.headers["content-type"].startswith("text/event-stream")
    assert int(response.headers["x-ratelimit-remaining-requests"]) < fake_groq.limit_rpd
    lines = [line for line in response.text.split("\n\n") if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    for chunk in chunks:
        assert {"id", "object", "created", "model", "choices"} <= set(chunk)
        assert chunk["object"] == "chat.completion.chunk" and "usage" in chunk
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    final, usage_only = chunks[-2], chunks[-1]
    assert final["choices"][0]["finish_reason"] == "stop"
    assert final["x_groq"]["usage"]["total_tokens"] > 0
    assert usage_only["choices"] == [] and usage_only["usage"] == final["x_groq"]["usage"]
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}


# ----- the idle timer (one per stream) -----


async def test_a_slow_consumer_is_not_a_stall(fake_groq: FakeGroq, make_client: MakeClient) -> None:
    # Only the wait for the server counts: time spent between reads is the caller's.
    fake_groq.reply_words = 10
    seen: list[ChatEvent] = []
    async for event in make_client(stream_idle_timeout_s=0.2).stream(ask()):
        seen.append(event)
        await asyncio.sleep(0.15)
    assert text_of(seen).startswith("turns=2 last=hello there")
    assert isinstance(seen[-1], Finished)


async def test_a_stall_names_the_idle_timeout(fake_groq: FakeGroq, make_client: MakeClient) -> None:
    fake_groq.script("stall", after_tokens=4, seconds=3)
    with pytest.raises(StreamInterrupted) as caught:
        await collect(make_client(stream_idle_timeout_s=0.2), ask())
    assert caught.value.detail is not None and "no stream data for 0.2 s" in caught.value.detail


async def test_cancelling_a_stream_stays_a_cancellation(
    fake_groq: FakeGroq, make_client: MakeClient
) -> None:
    fake_groq.script("stall", after_tokens=4, seconds=3)
    task = asyncio.create_task(collect(make_client(stream_idle_timeout_s=0.2), ask()))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
