"""Context budget arithmetic and message building."""

from __future__ import annotations

import pytest

from bot.context import (
    build_messages,
    estimate_tokens,
    history_budget,
    render_user_text,
    supports_images,
)
from bot.errors import InputRejected
from bot.types import Attachment, ChatMessage, ModelInfo, StoredMessage


def test_budget_reserves_output_and_system_prompt() -> None:
    model = ModelInfo(id="m", context_window=8192, max_completion_tokens=None)
    budget = history_budget(model, max_output_tokens=1024, system_prompt="x" * 400, cap=None)
    assert budget == int(8192 * 0.9) - 1024 - estimate_tokens("x" * 400)
    assert history_budget(model, max_output_tokens=1024, system_prompt="", cap=500) == 500


def test_budget_uses_model_output_cap_and_never_goes_negative() -> None:
    small = ModelInfo(id="m", context_window=1000, max_completion_tokens=100)
    assert history_budget(small, max_output_tokens=4096, system_prompt="", cap=None) > 0
    tiny = ModelInfo(id="m", context_window=100)
    assert history_budget(tiny, max_output_tokens=4096, system_prompt="", cap=None) == 0


def test_system_prompt_first_and_history_order_kept() -> None:
    history = [
        StoredMessage("user", "one", 5),
        StoredMessage("assistant", "two", 5),
        StoredMessage("user", "three", 5),
    ]
    messages = build_messages("be nice", history)
    assert [(m.role, m.content) for m in messages] == [
        ("system", "be nice"),
        ("user", "one"),
        ("assistant", "two"),
        ("user", "three"),
    ]
    rich = ChatMessage("user", ({"type": "text", "text": "three"},))
    assert build_messages("", history, current=rich)[-1] is rich


def test_nothing_fits_is_a_clear_rejection() -> None:
    with pytest.raises(InputRejected, match="too long"):
        build_messages("sys", [])


def test_text_attachments_are_inlined_and_images_are_not() -> None:
    files = (
        Attachment("notes.txt", "text/plain", 5, data=b"hello"),
        Attachment("cat.png", "image/png", 10, url="https://cdn.example/cat.png"),
    )
    text = render_user_text("look", files)
    assert "notes.txt" in text and "hello" in text and "cat.png" not in text


def test_vision_heuristic() -> None:
    assert supports_images("meta-llama/llama-4-scout-17b-16e-instruct")
    assert not supports_images("openai/gpt-oss-120b")
