"""Pure, incremental parsing of OpenAI-style chat-completion streams.

``SSEDecoder`` turns bytes of a ``text/event-stream`` into messages (any chunk
boundaries, LF / CRLF / CR line ends, comments, multi-line ``data``).
``ChatStreamParser`` turns those messages into ``ChatEvent`` values: ``delta.content``
→ ``TextDelta``; ``delta.reasoning`` (Groq, gpt-oss) or ``delta.reasoning_content``
(vLLM, DeepSeek) → ``ReasoningDelta``; ``data: [DONE]`` → ``Finished`` with the usage
from the top-level ``usage`` or ``x_groq.usage`` and the last ``finish_reason``. An
error event raises the mapped ``UpstreamError``. ``<think>`` tags are left in the text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bot.errors import UpstreamError, UpstreamServerError
from bot.llm.errors import error_from_payload, scrub
from bot.types import ChatEvent, Finished, ReasoningDelta, TextDelta, Usage

__all__ = ["ChatStreamParser", "SSEDecoder", "SSEMessage", "parse_usage"]


@dataclass(frozen=True, slots=True)
class SSEMessage:
    """One dispatched server-sent event."""

    data: str
    event: str = ""


class SSEDecoder:
    """Incremental ``text/event-stream`` decoder: feed bytes, get complete messages."""

    def __init__(self) -> None:
        self._buffer = b""
        self._skip_lf = False  # a chunk ended in CR; a following LF belongs to it
        self._data: list[str] = []
        self._event = ""

    def feed(self, chunk: bytes) -> list[SSEMessage]:
        """Messages completed by ``chunk``; partial lines are kept for the next call."""
        messages: list[SSEMessage] = []
        for line in self.lines(chunk):
            message = self.feed_line(line)
            if message is not None:
                messages.append(message)
        return messages

    def lines(self, chunk: bytes) -> list[str]:
        """The complete lines ``chunk`` ends (without line ends), decoded in one pass;
        the caller passes each to ``feed_line`` (or handles it as that would)."""
        if self._skip_lf and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._skip_lf = False
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buffer:  # rare (servers send LF): fold CRLF and CR into LF
            # A CR at the very end is a line end; an LF opening the next chunk is its.
            self._skip_lf = buffer.endswith(b"\r")
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end = buffer.rfind(b"\n")
        if end < 0:
            self._buffer = buffer
            return []
        self._buffer = buffer[end + 1 :]
        # Line ends never occur inside a UTF-8 sequence, so whole lines decode safely.
        return buffer[:end].decode("utf-8", "replace").split("\n")

    def feed_line(self, line: str) -> SSEMessage | None:
        """Process one line (without its line end); return a message on a blank line."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # comment / keep-alive
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None

    def flush(self) -> list[SSEMessage]:
        """At end of input: the last line and event even without their terminators.

        The SSE spec drops an unterminated event; we keep it, because a server that
        closes right after ``data: [DONE]`` has still finished properly.
        """
        messages: list[SSEMessage] = []
        if self._buffer:
            line, self._buffer = self._buffer.decode("utf-8", "replace"), b""
            message = self.feed_line(line)
            if message is not None:
                messages.append(message)
        message = self._dispatch()
        if message is not None:
            messages.append(message)
        return messages

    def _dispatch(self) -> SSEMessage | None:
        data, event = self.take()
        return SSEMessage(data, event) if data else None

    def take(self) -> tuple[str, str]:
        """The pending event's data and name (at a blank line), and reset them."""
        data = self._data[0] if len(self._data) == 1 else "\n".join(self._data)
        event = self._event
        self._data, self._event = [], ""
        return data, event


def parse_usage(value: object) -> Usage | None:
    """``Usage`` from an OpenAI ``usage`` object; None when absent or malformed."""
    if not isinstance(value, Mapping):
        return None
    prompt, completion = value.get("prompt_tokens"), value.get("completion_tokens")
    if not isinstance(prompt, int) and not isinstance(completion, int):
        return None
    return Usage(
        prompt_tokens=prompt if isinstance(prompt, int) else 0,
        completion_tokens=completion if isinstance(completion, int) else 0,
    )


# What a streamed chunk is made of comes from json.loads: objects are dicts, so the
# per-event checks below test for dict (a Mapping isinstance is an ABC walk, several
# times the cost, once per event and field).


def _chunk_usage(chunk: dict[str, object]) -> Usage | None:
    usage, x_groq = chunk.get("usage"), chunk.get("x_groq")
    if usage is None and not (isinstance(x_groq, dict) and "usage" in x_groq):
        return None  # most chunks: no usage anywhere
    return parse_usage(usage) or (
        parse_usage(x_groq.get("usage")) if isinstance(x_groq, dict) else None
    )


def _first_choice(payload: dict[str, object]) -> dict[str, object]:
    choices = payload.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                return choice
    return {}


def _reasoning(part: dict[str, object]) -> str:
    value = part.get("reasoning") or part.get("reasoning_content")
    return value if isinstance(value, str) else ""


class ChatStreamParser:
    """Chat-completion stream bytes → ``ChatEvent`` values; raises ``UpstreamError``.

    ``done`` becomes true at ``data: [DONE]``; anything after it is ignored. An error
    event after others in one ``feed`` is kept in ``failed`` (see ``raise_failure``), so
    the events before it are returned first.
    """

    def __init__(self, *, model: str | None = None, secrets: Sequence[str] = ()) -> None:
        self._decoder = SSEDecoder()
        self._model = model
        self._secrets = tuple(secrets)
        self.done = False
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.failed: UpstreamError | None = None

    def feed(self, chunk: bytes) -> list[ChatEvent]:
        """Events completed by ``chunk``."""
        # The decoder's feed, inlined for the hot path: no SSEMessage per event.
        decoder = self._decoder
        events: list[ChatEvent] = []
        for line in decoder.lines(chunk):
            if line.startswith("data: "):  # nearly every line: skip the general parse
                decoder._data.append(line[6:])
                continue
            if line:
                decoder.feed_line(line)
                continue
            data, event = decoder.take()
            if data and not self.done:
                try:
                    events.extend(self._message(data, event))
                except UpstreamError as exc:
                    if not events:
                        raise
                    # The events before the error are the caller's first: one network
                    # read often holds a few tokens and the error that ended them.
                    self.failed = exc
                    break
        return events

    def raise_failure(self) -> None:
        """Raise the error that ended the stream after the events ``feed`` returned."""
        if self.failed is not None:
            raise self.failed

    def finish(self) -> list[ChatEvent]:
        """Events left at end of input (a final message without its blank line)."""
        events: list[ChatEvent] = []
        for message in self._decoder.flush():
            events.extend(self.feed_message(message))
        return events

    def feed_message(self, message: SSEMessage) -> list[ChatEvent]:
        """Events carried by one server-sent message."""
        return [] if self.done else self._message(message.data, message.event)

    def _message(self, data: str, event: str) -> list[ChatEvent]:
        data = data.strip()
        if data == "[DONE]":
            self.done = True
            return [Finished(usage=self.usage, finish_reason=self.finish_reason)]
        try:
            chunk = json.loads(data)
        except ValueError:
            if event == "error":
                raise self._error({"message": data}) from None
            raise UpstreamServerError(
                detail=f"malformed stream chunk: {scrub(data[:200], self._secrets)!r}"
            ) from None
        if not isinstance(chunk, dict):
            raise UpstreamServerError(detail="stream chunk is not a JSON object")
        error = chunk.get("error")
        if isinstance(error, dict):
            raise self._error(error)
        if error or event == "error":
            raise self._error({"message": str(error)} if error else chunk)
        return self._chunk_events(chunk)

    def _chunk_events(self, chunk: dict[str, object]) -> list[ChatEvent]:
        x_groq = chunk.get("x_groq")
        stopped = x_groq.get("error") if isinstance(x_groq, dict) else None
        if isinstance(stopped, str) and stopped:
            # Groq's way of saying the generation stopped early on its side.
            raise self._error({"message": stopped, "type": "internal_server_error"})
        self.usage = _chunk_usage(chunk) or self.usage
        choice = _first_choice(chunk)
        reason = choice.get("finish_reason")
        if isinstance(reason, str):
            self.finish_reason = reason
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return []
        events: list[ChatEvent] = []
        reasoning = _reasoning(delta)
        if reasoning:
            events.append(ReasoningDelta(reasoning))
        content = delta.get("content")
        if isinstance(content, str) and content:
            events.append(TextDelta(content))
        return events

    def _error(self, error: Mapping[str, object]) -> UpstreamError:
        return error_from_payload(error, status=None, model=self._model, secrets=self._secrets)
