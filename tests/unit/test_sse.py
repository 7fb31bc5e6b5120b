"""SSE decoding and chat-chunk parsing: pure, no sockets."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.errors import (
    UpstreamRateLimited,
    UpstreamServerError,
)
from bot.llm.sse import ChatStreamParser, SSEDecoder, SSEMessage
from bot.types import ChatEvent, Finished, ReasoningDelta, TextDelta, Usage


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **more: Any) -> str:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "openai/gpt-oss-20b",
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        **more,
    }
    return f"data: {json.dumps(body)}\n\n"


USAGE = {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19, "queue_time": 0.1}

# A Groq-shaped stream: role chunk, reasoning, content, final chunk with x_groq.usage.
GROQ_STREAM = (
    chunk({"role": "assistant", "content": ""}, x_groq={"id": "req_1"})
    + chunk({"reasoning": "Think "})
    + chunk({"reasoning": "hard."})
    + chunk({"content": "Hello"})
    + ": keep-alive comment\n\n"
    + chunk({"content": " wörld 👋"})
    + chunk({}, "stop", x_groq={"id": "req_1", "usage": USAGE})
    + "data: [DONE]\n\n"
).encode()

EXPECTED = [
    ReasoningDelta("Think "),
    ReasoningDelta("hard."),
    TextDelta("Hello"),
    TextDelta(" wörld 👋"),
    Finished(usage=Usage(12, 7), finish_reason="stop"),
]


def parse_all(*parts: bytes) -> list[ChatEvent]:
    parser = ChatStreamParser()
    events: list[ChatEvent] = []
    for part in parts:
        events.extend(parser.feed(part))
    events.extend(parser.finish())
    assert parser.done
    return events


def test_groq_stream_in_one_piece() -> None:
    assert parse_all(GROQ_STREAM) == EXPECTED


def test_every_split_point_gives_the_same_events() -> None:
    # Includes splits inside "data:", inside JSON, inside multi-byte UTF-8 and between \n\n.
    for cut in range(1, len(GROQ_STREAM)):
        assert parse_all(GROQ_STREAM[:cut], GROQ_STREAM[cut:]) == EXPECTED, cut


def test_byte_by_byte() -> None:
    assert parse_all(*(GROQ_STREAM[i : i + 1] for i in range(len(GROQ_STREAM)))) == EXPECTED


@pytest.mark.parametrize("eol", [b"\r\n", b"\r", b"\n"])
def test_line_endings(eol: bytes) -> None:
    data = GROQ_STREAM.replace(b"\n", eol)
    assert parse_all(data) == EXPECTED
    # A CRLF cut between its CR and LF must not produce an extra blank line.
    for cut in range(1, len(data)):
        assert parse_all(data[:cut], data[cut:]) == EXPECTED


@pytest.mark.parametrize("eol", [b"\r\n", b"\r"])
def test_line_endings_byte_by_byte(eol: bytes) -> None:
    # Every read ends in a CR or starts with an LF: the folding must still pair them.
    data = GROQ_STREAM.replace(b"\n", eol)
    assert parse_all(*(data[i : i + 1] for i in range(len(data)))) == EXPECTED


def test_mixed_line_endings_in_one_read() -> None:
    data = b"data: [1]\r\n\rdata: [2]\n\r\ndata: x\r\r"
    assert SSEDecoder().feed(data) == [SSEMessage("[1]"), SSEMessage("[2]"), SSEMessage("x")]


def test_decoder_multiline_data_comments_and_event_names() -> None:
    decoder = SSEDecoder()
    messages = decoder.feed(b": hello\nevent: error\ndata: line one\ndata:line two\nid: 7\n\n")
    assert messages == [SSEMessage("line one\nline two", "error")]
    assert decoder.feed(b"data\n\n") == []  # an empty data field dispatches nothing
    assert decoder.feed(b"data: x\n\n") == [SSEMessage("x", "")]  # event name was reset


def test_done_without_trailing_blank_line_still_finishes() -> None:
    parser = ChatStreamParser()
    assert parser.feed(chunk({"content": "hi"}).encode() + b"data: [DONE]") == [TextDelta("hi")]
    assert not parser.done
    assert parser.finish() == [Finished()]
    assert parser.done


def test_top_level_usage_chunk_and_null_usage_elsewhere() -> None:
    data = (
        chunk({"content": "a"}, usage=None)
        + chunk({}, "length", usage=None)
        + chunk(None, usage=USAGE)  # stream_options.include_usage: choices is empty
        + "data: [DONE]\n\n"
    )
    assert parse_all(data.encode()) == [
        TextDelta("a"),
        Finished(usage=Usage(12, 7), finish_reason="length"),
    ]


def test_reasoning_content_field_and_empty_deltas() -> None:
    data = (
        chunk({"reasoning_content": "hmm"})
        + chunk({"content": None})
        + chunk({"content": ""})
        + chunk({"content": "<think>x</think>ok"})  # tags are the engine's job
        + "data: [DONE]\n\n"
    )
    assert parse_all(data.encode()) == [
        ReasoningDelta("hmm"),
        TextDelta("<think>x</think>ok"),
        Finished(),
    ]


def test_data_after_done_is_ignored() -> None:
    parser = ChatStreamParser()
    events = parser.feed(b"data: [DONE]\n\n" + chunk({"content": "late"}).encode())
    assert events == [Finished()]


def test_error_event_mid_stream_raises_mapped_error() -> None:
    parser = ChatStreamParser()
    assert parser.feed(chunk({"content": "partial"}).encode()) == [TextDelta("partial")]
    error = {"error": {"message": "Internal error", "type": "internal_server_error"}}
    with pytest.raises(UpstreamServerError) as caught:
        parser.feed(f"data: {json.dumps(error)}\n\n".encode())
    assert caught.value.retryable
    assert "Internal error" in caught.value.detail


def test_rate_limit_error_event_keeps_retry_after() -> None:
    error = {
        "error": {
            "message": "Rate limit reached on tokens per minute. Please try again in 1m2.5s.",
            "type": "tokens",
            "code": "rate_limit_exceeded",
        }
    }
    with pytest.raises(UpstreamRateLimited) as caught:
        ChatStreamParser().feed(f"data: {json.dumps(error)}\n\n".encode())
    assert caught.value.retry_after_s == pytest.approx(62.5)


def test_x_groq_error_and_event_error_and_malformed_chunk() -> None:
    with pytest.raises(UpstreamServerError):
        ChatStreamParser().feed(chunk({}, x_groq={"error": "over capacity"}).encode())
    with pytest.raises(UpstreamServerError):
        ChatStreamParser().feed(b"event: error\ndata: something broke\n\n")
    with pytest.raises(UpstreamServerError) as caught:
        ChatStreamParser().feed(b"data: {not json\n\n")
    assert "malformed" in caught.value.detail


def test_error_event_is_scrubbed_of_the_key() -> None:
    key = "gsk_supersecretvalue123456"
    error = {"error": {"message": f"bad key {key}", "type": "invalid_request_error"}}
    with pytest.raises(UpstreamServerError) as caught:
        ChatStreamParser(secrets=[key]).feed(f"data: {json.dumps(error)}\n\n".encode())
    assert key not in str(caught.value) and key not in caught.value.detail


def test_events_before_an_error_in_the_same_read_come_first() -> None:
    parser = ChatStreamParser()
    error = json.dumps({"error": {"message": "boom", "type": "internal_server_error"}})
    read = (chunk({"content": "Hel"}) + chunk({"content": "lo"}) + f"data: {error}\n\n").encode()
    assert parser.feed(read) == [TextDelta("Hel"), TextDelta("lo")]
    with pytest.raises(UpstreamServerError):
        parser.raise_failure()
    with pytest.raises(UpstreamServerError):  # alone in its read, it raises from feed
        ChatStreamParser().feed(f"data: {error}\n\n".encode())
