"""Separating model reasoning from the answer.

Reasoning arrives three ways: ``<think>…</think>`` inside content (Groq
``reasoning_format: raw`` and most self-hosted servers), a separate ``reasoning``
delta (``parsed``), and gpt-oss models' ``reasoning`` deltas. The engine keeps it out
of the stored answer and shows it only when ``SHOW_REASONING`` is on.
"""

from __future__ import annotations

__all__ = ["ThinkSplitter", "reasoning_params"]

_OPEN = "<think>"
_CLOSE = "</think>"


class ThinkSplitter:
    """Incrementally split streamed content into (answer, reasoning) around think tags.

    Tags may be cut across chunks, so a possible tag prefix at the end of a chunk is
    held back until the next chunk decides it.
    """

    def __init__(self) -> None:
        self._inside = False
        self._pending = ""

    def feed(self, chunk: str) -> tuple[str, str]:
        """Return the answer text and reasoning text decided by this chunk."""
        if not self._pending and "<" not in chunk:
            # Every tag and tag prefix starts with "<": nothing to find or hold back.
            return ("", chunk) if self._inside else (chunk, "")
        data = self._pending + chunk
        self._pending = ""
        answer: list[str] = []
        reasoning: list[str] = []
        while data:
            tag = _CLOSE if self._inside else _OPEN
            idx = data.find(tag)
            if idx >= 0:
                (reasoning if self._inside else answer).append(data[:idx])
                data = data[idx + len(tag) :]
                self._inside = not self._inside
                continue
            keep = _partial_suffix(data, tag)
            (reasoning if self._inside else answer).append(data[: len(data) - keep])
            self._pending = data[len(data) - keep :]
            break
        return "".join(answer), "".join(reasoning)

    def flush(self) -> tuple[str, str]:
        """Release held-back text at end of stream."""
        rest, self._pending = self._pending, ""
        return ("", rest) if self._inside else (rest, "")


def _partial_suffix(data: str, tag: str) -> int:
    """Length of the longest suffix of ``data`` that is a proper prefix of ``tag``."""
    for n in range(min(len(tag) - 1, len(data)), 0, -1):
        if data.endswith(tag[:n]):
            return n
    return 0


def reasoning_params(model: str, *, show: bool, effort: str | None) -> dict[str, object]:
    """Model-family specific request fields controlling reasoning output.

    gpt-oss rejects ``reasoning_format`` but takes ``include_reasoning`` and
    ``reasoning_effort``; Qwen 3 and DeepSeek-R1 take ``reasoning_format``. Other
    models get nothing, because strict OpenAI-compatible servers reject unknown fields.
    """
    name = model.lower()
    if "gpt-oss" in name:
        params: dict[str, object] = {"include_reasoning": show}
        if effort:
            params["reasoning_effort"] = effort
        return params
    if "qwen3" in name or "qwen-3" in name or "deepseek-r1" in name:
        return {"reasoning_format": "parsed" if show else "hidden"}
    return {}
