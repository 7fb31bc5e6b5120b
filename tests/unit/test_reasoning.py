"""Think-tag splitting across arbitrary chunk boundaries, and per-family request fields."""

from __future__ import annotations

import pytest

from bot.reasoning import ThinkSplitter, reasoning_params

TEXT = "<think>step one, step two</think>The answer is 42. <think>more</think>Done."


def _run(chunks: list[str]) -> tuple[str, str]:
    splitter = ThinkSplitter()
    answer, reasoning = "", ""
    for chunk in chunks:
        a, r = splitter.feed(chunk)
        answer += a
        reasoning += r
    a, r = splitter.flush()
    return answer + a, reasoning + r


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 100])
def test_split_is_independent_of_chunking(size: int) -> None:
    chunks = [TEXT[i : i + size] for i in range(0, len(TEXT), size)]
    assert _run(chunks) == ("The answer is 42. Done.", "step one, step twomore")


def test_plain_text_and_lookalike_tags_pass_through() -> None:
    assert _run(["a < b and <th", "ink about it"]) == ("a < b and <think about it", "")


def test_unclosed_think_at_end_counts_as_reasoning() -> None:
    assert _run(["hi <think>unfinished <"]) == ("hi ", "unfinished <")


def test_reasoning_params_per_family() -> None:
    assert reasoning_params("openai/gpt-oss-120b", show=False, effort=None) == {
        "include_reasoning": False
    }
    assert reasoning_params("openai/gpt-oss-20b", show=True, effort="low") == {
        "include_reasoning": True,
        "reasoning_effort": "low",
    }
    assert reasoning_params("qwen/qwen3-32b", show=False, effort="low") == {
        "reasoning_format": "hidden"
    }
    assert reasoning_params("llama-3.1-8b-instant", show=True, effort="high") == {}
