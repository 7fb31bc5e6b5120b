"""What kind of OpenAI-compatible server the bot talks to, and what that server says.

Servers differ in ways the bot must adapt to (each noted where it is used):

=========  =================  ==============================  ==========================
kind       output cap param   context window from             rate-limit headers
=========  =================  ==============================  ==========================
groq       max_completion_…   ``/models`` ``context_window``  requests per day, tokens/min
openai     max_completion_…   built-in table (``/models`` has  requests and tokens per min
                              no size)
llamacpp   max_tokens         ``GET /props`` ``n_ctx``          none
vllm       max_tokens         ``/models`` ``max_model_len``     none
ollama     max_tokens         ``POST /api/show`` ``num_ctx``    none
other      max_tokens         CONTEXT_TOKEN_BUDGET, else a     whatever it sends
                              conservative default
=========  =================  ==============================  ==========================

Sources: Groq's OpenAPI spec (``shared/groq-openapi.yml``) and rate-limit docs; OpenAI's
API reference (``max_tokens`` deprecated for ``max_completion_tokens``; ``x-ratelimit-*``
per minute); llama.cpp ``tools/server/README.md`` (``/props``); llama-cpp-python
``llama_cpp/server/app.py`` (``/v1/models`` with ``owned_by: "me"``, no ``/props``, reads
only ``max_tokens``); vLLM's OpenAI server (``max_model_len`` in each model card, owned by
"vllm"); Ollama's ``docs/api.md`` (``/api/version``, ``/api/show``).

This module is pure: the client does the HTTP and hands the payloads in here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import httpx

from bot.context import CONSERVATIVE_CONTEXT_WINDOW
from bot.settings import HOSTED_CONCURRENCY, LOCAL_CONCURRENCY

__all__ = [
    "CONSERVATIVE_CONTEXT_WINDOW",
    "OLLAMA_DEFAULT_NUM_CTX",
    "Provider",
    "ProviderKind",
    "api_root",
    "kind_from_models",
    "kind_from_url",
    "openai_window",
    "window_from_ollama_show",
    "window_from_props",
]

OLLAMA_DEFAULT_NUM_CTX = 4096
"""Ollama's default ``num_ctx`` when a model's parameters don't set one (docs/faq.md)."""


class ProviderKind(StrEnum):
    """A family of OpenAI-compatible servers that behave alike."""

    GROQ = "groq"
    OPENAI = "openai"
    LLAMACPP = "llamacpp"
    VLLM = "vllm"
    OLLAMA = "ollama"
    OTHER = "other"


_LABELS = {
    ProviderKind.GROQ: "Groq",
    ProviderKind.OPENAI: "OpenAI",
    ProviderKind.LLAMACPP: "a llama.cpp server",
    ProviderKind.VLLM: "a vLLM server",
    ProviderKind.OLLAMA: "Ollama",
    ProviderKind.OTHER: "an OpenAI-compatible server",
}


@dataclass(frozen=True, slots=True)
class Provider:
    """The server kind and what follows from it."""

    kind: ProviderKind
    detected_by: str = "default"

    @property
    def label(self) -> str:
        return _LABELS[self.kind]

    @property
    def output_cap_param(self) -> str:
        """The request field the server honours for the answer cap. Groq and OpenAI
        document ``max_completion_tokens`` (OpenAI rejects ``max_tokens`` for reasoning
        models); llama.cpp, llama-cpp-python, vLLM and Ollama read ``max_tokens``."""
        if self.kind in (ProviderKind.GROQ, ProviderKind.OPENAI):
            return "max_completion_tokens"
        return "max_tokens"

    @property
    def concurrency(self) -> int:
        """Requests in flight when MAX_CONCURRENT_REQUESTS is not set. Hosted APIs
        limit requests and tokens per minute and day, not open streams (the quota keeps
        the bot inside those), so only the bot's own sockets bound them. llama.cpp's
        server runs 4 slots by default (llama-cpp-python one) and Ollama 1-4 by memory:
        more would only queue inside the server, past REQUEST_TIMEOUT_S."""
        if self.kind in (ProviderKind.LLAMACPP, ProviderKind.OLLAMA):
            return LOCAL_CONCURRENCY
        return HOSTED_CONCURRENCY

    @property
    def builtin_limits(self) -> bool:
        """Whether the built-in Groq free-tier table describes this account."""
        return self.kind is ProviderKind.GROQ

    @property
    def requests_header_dimension(self) -> str:
        """What ``x-ratelimit-*-requests`` count: Groq documents them per day, OpenAI
        (and servers copying it) per minute."""
        return "rpd" if self.kind is ProviderKind.GROQ else "rpm"


def api_root(base_url: str) -> str:
    """The server root for non-``/v1`` endpoints: ``http://h:8080/v1`` → ``http://h:8080``."""
    root = base_url.rstrip("/")
    for suffix in ("/openai/v1", "/v1"):
        if root.endswith(suffix):
            return root[: -len(suffix)]
    return root


def kind_from_url(base_url: str) -> ProviderKind | None:
    """The kind for well-known hosted APIs; None when the URL alone doesn't tell."""
    try:
        host = httpx.URL(base_url).host.lower()
    except (httpx.InvalidURL, TypeError):
        return None
    if host == "api.groq.com":
        return ProviderKind.GROQ
    if host == "api.openai.com":
        return ProviderKind.OPENAI
    return None


def _entries(payload: object) -> list[Mapping[str, object]]:
    data = payload.get("data") if isinstance(payload, Mapping) else None
    return [e for e in data if isinstance(e, Mapping)] if isinstance(data, list) else []


def kind_from_models(payload: object) -> ProviderKind | None:
    """Recognise a server from its ``/models`` answer, when its entries are distinctive."""
    entries = _entries(payload)
    if not entries:
        return None
    if all("context_window" in e and "active" in e for e in entries):
        return ProviderKind.GROQ  # Groq's documented model object
    if any("max_model_len" in e or e.get("owned_by") == "vllm" for e in entries):
        return ProviderKind.VLLM
    # llama.cpp's server says owned_by "llamacpp"; llama-cpp-python says "me" with an
    # empty "permissions" list.
    if any(
        e.get("owned_by") == "llamacpp" or (e.get("owned_by") == "me" and "permissions" in e)
        for e in entries
    ):
        return ProviderKind.LLAMACPP
    return None


def _positive_int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if value > 0 else None


def window_from_props(payload: object) -> int | None:
    """llama.cpp's ``GET /props``: ``default_generation_settings.n_ctx`` (older and newer
    servers), or a top-level ``n_ctx``."""
    if not isinstance(payload, Mapping):
        return None
    settings = payload.get("default_generation_settings")
    if isinstance(settings, Mapping):
        found = _positive_int(settings.get("n_ctx"))
        if found is not None:
            return found
    return _positive_int(payload.get("n_ctx"))


def window_from_ollama_show(payload: object) -> int | None:
    """Ollama's ``POST /api/show``: the ``num_ctx`` a Modelfile sets (in ``parameters``,
    one ``name value`` per line), else Ollama's default capped by the model's own
    ``<arch>.context_length``. Ollama serves ``num_ctx`` tokens, not the trained length."""
    if not isinstance(payload, Mapping):
        return None
    params = payload.get("parameters")
    if isinstance(params, str):
        for line in params.splitlines():
            name, _, value = line.strip().partition(" ")
            if name == "num_ctx" and value.strip().isdigit():
                return int(value.strip())
    trained: int | None = None
    info = payload.get("model_info")
    if isinstance(info, Mapping):
        for key, value in info.items():
            if isinstance(key, str) and key.endswith(".context_length"):
                trained = _positive_int(value)
    return min(OLLAMA_DEFAULT_NUM_CTX, trained) if trained else OLLAMA_DEFAULT_NUM_CTX


# OpenAI's /v1/models carries no context size; these are the documented windows of the
# model families (platform.openai.com/docs/models), longest prefix first.
_OPENAI_WINDOWS = (
    ("gpt-4.1", 1_047_576),
    ("gpt-5", 400_000),
    ("gpt-4o", 128_000),
    ("gpt-4-turbo", 128_000),
    ("o1-mini", 128_000),
    ("o1", 200_000),
    ("o3", 200_000),
    ("o4-mini", 200_000),
    ("gpt-3.5-turbo", 16_385),
    ("gpt-4", 8_192),
)


def openai_window(model_id: str) -> int | None:
    """The documented window of an OpenAI model family, None when unknown."""
    for prefix, window in _OPENAI_WINDOWS:
        if model_id.startswith(prefix):
            return window
    return None
