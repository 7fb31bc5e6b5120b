"""What FakeGroq answers: the echo reply, reasoning like Groq's models, the pieces to
stream, and the usage and JSON completion bodies."""

from __future__ import annotations

import math
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from tests.fakes.groq_models import prompt_tokens, text_of

__all__ = ["FILLER", "Plan", "completion", "echo_reply", "grouped", "plan_answer", "usage"]

FILLER = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa")


@dataclass
class Plan:
    """What one answer will stream: (kind, text) pieces and the usage to report."""

    pieces: list[tuple[str, str]]
    reasoning: str
    content: str
    prompt_tokens: int
    completion_tokens: int


def echo_reply(body: dict[str, Any], filler_words: int) -> str:
    """The default reply, revealing what was received, padded with ``FILLER`` words."""
    users = [m for m in body["messages"] if m.get("role") == "user"]
    last = text_of(users[-1].get("content")) if users else ""
    text = f"turns={len(users)} last={last} model={body['model']}"
    filler = [FILLER[i % len(FILLER)] for i in range(filler_words)]
    return " ".join([text, *filler])


def _reasoning_mode(body: dict[str, Any], force_raw_think: bool) -> str:
    """How to answer with reasoning, like Groq: "field", "think" or "none".

    "field" streams ``delta.reasoning``; "think" puts ``<think>…</think>`` in content.
    """
    model = str(body["model"])
    if force_raw_think:
        return "think"
    if "gpt-oss" in model:
        return "none" if body.get("include_reasoning") is False else "field"
    if "qwen3" in model or "deepseek-r1" in model:
        if body.get("include_reasoning") is False or body.get("reasoning_effort") == "none":
            return "none"
        form = str(body.get("reasoning_format") or "raw")
        return {"parsed": "field", "hidden": "none"}.get(form, "think")
    return "none"


def _pieces(text: str, size: int = 8) -> list[str]:
    """Split like a tokenizer would, roughly: words with their spaces, long ones cut."""
    words = re.findall(r"\S+\s*|\s+", text)
    return [w[i : i + size] for w in words for i in range(0, len(w), size)]


def plan_answer(
    body: dict[str, Any], reply: str, reasoning_text: str, force_raw_think: bool
) -> Plan:
    """The answer to ``body``: ``reply``, with ``reasoning_text`` where the model reasons."""
    mode = _reasoning_mode(body, force_raw_think)
    reasoning = reasoning_text if mode != "none" else ""
    pieces = [("reasoning", p) for p in _pieces(reasoning)] if mode == "field" else []
    content = f"<think>\n{reasoning}\n</think>\n\n{reply}" if mode == "think" else reply
    pieces += [("content", p) for p in _pieces(content)]
    completion_tokens = math.ceil(len(reasoning if mode == "field" else "") / 4 + len(content) / 4)
    return Plan(pieces, reasoning, content, prompt_tokens(body), completion_tokens)


def grouped(pieces: list[tuple[str, str]], per_event: int) -> list[tuple[str, str]]:
    """``pieces`` joined ``per_event`` at a time, never across a change of kind (a
    reasoning piece and a content piece are different delta fields)."""
    if per_event <= 1:
        return pieces
    out: list[tuple[str, str]] = []
    count = 0
    for kind, text in pieces:
        if out and out[-1][0] == kind and count < per_event:
            out[-1] = (kind, out[-1][1] + text)
            count += 1
        else:
            out.append((kind, text))
            count = 1
    return out


def usage(plan: Plan) -> dict[str, Any]:
    return {
        "queue_time": 0.01,
        "prompt_tokens": plan.prompt_tokens,
        "prompt_time": 0.002,
        "completion_tokens": plan.completion_tokens,
        "completion_time": 0.03,
        "total_tokens": plan.prompt_tokens + plan.completion_tokens,
        "total_time": 0.032,
    }


def completion(body: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """The non-streaming ``chat.completion`` body."""
    message: dict[str, Any] = {"role": "assistant", "content": plan.content}
    if any(kind == "reasoning" for kind, _ in plan.pieces):
        message["reasoning"] = plan.reasoning
    return {
        "id": f"chatcmpl-{uuid.uuid4()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
        "usage": usage(plan),
        "system_fingerprint": "fp_fake",
        "x_groq": {"id": f"req_{uuid.uuid4().hex}"},
    }
