"""Which server the bot talks to, what follows from it, and how overflows are read.

The payload shapes are the servers' own (sources in ``bot/llm/provider.py``).
"""

from __future__ import annotations

import json

import pytest

from bot.commands import is_chat_model, window_text
from bot.errors import ContextTooLong
from bot.llm.errors import error_from_response
from bot.llm.provider import (
    Provider,
    ProviderKind,
    api_root,
    kind_from_models,
    kind_from_url,
    openai_window,
    window_from_ollama_show,
    window_from_props,
)
from bot.types import ModelInfo

GROQ_MODEL = {
    "id": "openai/gpt-oss-20b",
    "object": "model",
    "created": 1,
    "owned_by": "OpenAI",
    "active": True,
    "context_window": 131072,
    "public_apps": None,
    "max_completion_tokens": 65536,
}
LLAMA_CPP_PYTHON_MODEL = {
    "id": "/models/SmolLM2-360M-Instruct-Q8_0.gguf",
    "object": "model",
    "owned_by": "me",
    "permissions": [],
}
VLLM_MODEL = {
    "id": "Qwen/Qwen2.5-7B",
    "object": "model",
    "owned_by": "vllm",
    "max_model_len": 32768,
}
OPENAI_MODEL = {"id": "gpt-4o-mini", "object": "model", "created": 1, "owned_by": "system"}


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("https://api.groq.com/openai/v1", ProviderKind.GROQ),
        ("https://API.OPENAI.COM/v1", ProviderKind.OPENAI),
        ("http://localhost:8080/v1", None),
        ("not a url at all", None),
    ],
)
def test_kind_from_url(url: str, kind: ProviderKind | None) -> None:
    assert kind_from_url(url) == kind


@pytest.mark.parametrize(
    ("entries", "kind"),
    [
        ([GROQ_MODEL], ProviderKind.GROQ),
        ([LLAMA_CPP_PYTHON_MODEL], ProviderKind.LLAMACPP),
        ([{"id": "m.gguf", "object": "model", "owned_by": "llamacpp"}], ProviderKind.LLAMACPP),
        ([VLLM_MODEL], ProviderKind.VLLM),
        ([OPENAI_MODEL], None),  # nothing distinctive: the probes decide
        ([], None),
    ],
)
def test_kind_from_models(entries: list[dict[str, object]], kind: ProviderKind | None) -> None:
    assert kind_from_models({"object": "list", "data": entries}) == kind


def test_what_each_kind_implies() -> None:
    groq, openai, llama = (Provider(ProviderKind(k)) for k in ("groq", "openai", "llamacpp"))
    assert groq.output_cap_param == openai.output_cap_param == "max_completion_tokens"
    assert llama.output_cap_param == "max_tokens"
    assert groq.builtin_limits and not openai.builtin_limits and not llama.builtin_limits
    assert groq.requests_header_dimension == "rpd"
    assert openai.requests_header_dimension == "rpm"


def test_api_root_strips_the_openai_path() -> None:
    assert api_root("http://127.0.0.1:8080/v1/") == "http://127.0.0.1:8080"
    assert api_root("http://h/openai/v1") == "http://h"
    assert api_root("http://h:11434") == "http://h:11434"


def test_windows_from_llamacpp_props_and_ollama_show() -> None:
    assert window_from_props({"default_generation_settings": {"n_ctx": 2048}}) == 2048
    assert window_from_props({"n_ctx": 4096}) == 4096
    assert window_from_props({"detail": "Not Found"}) is None
    assert window_from_props(None) is None
    show = {
        "parameters": "stop <|eot|>\nnum_ctx 8192",
        "model_info": {"llama.context_length": 131072},
    }
    assert window_from_ollama_show(show) == 8192
    # No num_ctx: Ollama serves its default, never more than the model was trained for.
    assert window_from_ollama_show({"model_info": {"llama.context_length": 131072}}) == 4096
    assert window_from_ollama_show({"model_info": {"gemma.context_length": 2048}}) == 2048


def test_openai_windows_from_the_documented_table() -> None:
    assert openai_window("gpt-4o-mini") == 128_000
    assert openai_window("gpt-4.1-nano") == 1_047_576
    assert openai_window("o1-mini") == 128_000
    assert openai_window("davinci-002") is None


@pytest.mark.parametrize(
    ("status", "body", "window"),
    [
        # OpenAI / Groq / vLLM / llama-cpp-python: code and "maximum context length is N".
        (
            400,
            {
                "error": {
                    "message": "This model's maximum context length is 2048 tokens. However, "
                    "you requested 2300 tokens (1276 in the messages, 1024 in the completion).",
                    "type": "invalid_request_error",
                    "code": "context_length_exceeded",
                }
            },
            2048,
        ),
        # llama.cpp's server: its own type, and n_ctx as a field.
        (
            400,
            {
                "error": {
                    "code": 400,
                    "message": "the request exceeds the available context size, try increasing it",
                    "type": "exceed_context_size_error",
                    "n_prompt_tokens": 2100,
                    "n_ctx": 2048,
                }
            },
            2048,
        ),
        # Groq, without a figure.
        (
            400,
            {
                "error": {
                    "message": "Please reduce the length of the messages or completion.",
                    "type": "invalid_request_error",
                    "code": "context_length_exceeded",
                }
            },
            None,
        ),
    ],
)
def test_overflows_map_to_context_too_long_with_the_named_window(
    status: int, body: dict[str, object], window: int | None
) -> None:
    error = error_from_response(status, {}, json.dumps(body).encode())
    assert isinstance(error, ContextTooLong)
    assert error.window == window
    assert "/reset" in error.user_text


def test_chat_model_filter_and_window_text() -> None:
    assert is_chat_model("openai/gpt-oss-120b") and is_chat_model("llama-3.3-70b-versatile")
    for other in (
        "whisper-large-v3",
        "distil-whisper-large-v3-en",
        "playai-tts",
        "canopylabs/orpheus-v1-english",
        "meta-llama/llama-prompt-guard-2-86m",
        "meta-llama/llama-guard-4-12b",
        "nomic-embed-text",
    ):
        assert not is_chat_model(other), other
    assert window_text(ModelInfo("m", context_window=2048)) == "2,048 tokens context"
    assumed = window_text(ModelInfo("m", context_window=4096, context_source="default"))
    assert "assumed" in assumed and "CONTEXT_TOKEN_BUDGET" in assumed


def test_unset_concurrency_follows_the_servers_kind() -> None:
    hosted = [Provider(k).concurrency for k in (ProviderKind.GROQ, ProviderKind.OPENAI)]
    local = [Provider(k).concurrency for k in (ProviderKind.LLAMACPP, ProviderKind.OLLAMA)]
    assert hosted == [64, 64] and local == [4, 4]
    assert Provider(ProviderKind.VLLM).concurrency == 64  # batches many at once
