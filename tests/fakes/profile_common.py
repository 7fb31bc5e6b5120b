"""What FakeGroq's llama.cpp and OpenAI profiles share: the reply cut into tokens, the
completion cap with its ``finish_reason``, and the SSE stream with its faults."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from tests.fakes.groq_server import FakeGroq, _Fault

__all__ = [
    "Answer",
    "ChunkFn",
    "answer_tokens",
    "cut_answer",
    "open_stream",
    "plain_fault",
    "send_event",
    "stream_answer",
]

# Builds one whole chunk from (delta, finish_reason).
ChunkFn = Callable[[dict[str, Any], str | None], dict[str, Any]]


@dataclass
class Answer:
    """The reply as the fake will send it: its tokens, already cut to the cap."""

    tokens: list[str]
    finish_reason: str  # "stop", or "length" when the cap cut it
    prompt_tokens: int

    @property
    def content(self) -> str:
        return "".join(self.tokens)

    @property
    def completion_tokens(self) -> int:
        return len(self.tokens)


def answer_tokens(text: str, size: int = 6) -> list[str]:
    """The reply's tokens: words with their trailing space, long words cut every
    ``size`` characters. One token is one streamed piece and one completion token, so
    ``usage.completion_tokens`` always equals the pieces sent."""
    words = re.findall(r"\S+\s*|\s+", text)
    return [w[i : i + size] for w in words for i in range(0, len(w), size)]


def cut_answer(reply: str, prompt_tokens: int, cap: int | None) -> Answer:
    """``reply`` cut after ``cap`` tokens (``finish_reason`` "length"); None: no cap."""
    tokens = answer_tokens(reply)
    if cap is not None and len(tokens) > cap:
        return Answer(tokens[: max(cap, 0)], "length", prompt_tokens)
    return Answer(tokens, "stop", prompt_tokens)


async def plain_fault(fake: FakeGroq, request: web.Request, fault: _Fault | None) -> None:
    """A stream fault applied to a non-streamed answer: "drop" closes, "stall" waits."""
    if fault is None:
        return
    if fault.kind == "drop" and request.transport is not None:
        request.transport.abort()
    elif fault.kind == "stall":
        await fake._pause(float(fault.params.get("seconds", 1.0)))


async def open_stream(request: web.Request, headers: dict[str, str]) -> web.StreamResponse:
    """Send the 200 and the SSE headers; the body follows with ``send_event``."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **headers}
    )
    await response.prepare(request)
    return response


async def send_event(response: web.StreamResponse, payload: dict[str, Any] | str) -> None:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    await response.write(f"data: {data}\n\n".encode())


async def stream_answer(
    fake: FakeGroq,
    request: web.Request,
    response: web.StreamResponse,
    answer: Answer,
    chunk: ChunkFn,
    first_delta: dict[str, Any],
    fault: _Fault | None,
    record: dict[str, Any],
    tail: list[dict[str, Any]],
) -> web.StreamResponse:
    """Stream ``answer``: the role chunk, one chunk per token, the finish chunk, the
    ``tail`` events (e.g. OpenAI's usage chunk), then ``[DONE]``."""
    try:
        await send_event(response, chunk(first_delta, None))
        await fake._pause(fake.first_token_delay_s)
        after = int(fault.params.get("after_tokens", 3)) if fault else -1
        for sent, token in enumerate([*answer.tokens, None]):
            if (
                sent == after
                and fault is not None
                and await fake._stream_fault(fault, request, response)
            ):
                return response
            if token is None:
                break
            await send_event(response, chunk({"content": token}, None))
            record.setdefault("first_token_at", fake.clock())
            await fake._pause(fake.token_delay_s)
        await send_event(response, chunk({}, answer.finish_reason))
        for event in tail:
            await send_event(response, event)
        await send_event(response, "[DONE]")
        await response.write_eof()
    except ConnectionError:
        pass  # the client went away
    return response
