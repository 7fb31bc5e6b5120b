"""FakeGroq's server profiles: answer like Groq (the default), llama.cpp or api.openai.com.

``FakeGroq(profile=...)`` picks one. "groq" is FakeGroq's own behaviour, untouched.
"llamacpp" (``profile_llamacpp``) and "openai" (``profile_openai``) install their own
routes on the same server, under ``/v1`` instead of ``/openai/v1``, and share FakeGroq's
request log, reply knobs (``reply_text``, ``reply_fn``, ``reply_words``), delays, clock
and stream faults (``script("drop" | "stall" | "error_event")``; the status faults are
Groq-shaped and refused for them). They answer with content only: the reasoning knobs
are Groq's. What both share is in ``profile_common``.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Literal

from aiohttp import web

from tests.fakes.groq_models import DEFAULT_MODELS, FakeModel
from tests.fakes.profile_llamacpp import DEFAULT_MODEL_PATH, LlamaCppServer
from tests.fakes.profile_openai import OPENAI_MODELS, OpenAIServer

if TYPE_CHECKING:
    from tests.fakes.groq_server import FakeGroq

__all__ = ["ProfileName", "default_api_key", "default_models", "install_profile"]

ProfileName = Literal["groq", "llamacpp", "openai"]


def default_api_key(profile: ProfileName, api_key: str | None) -> str | None:
    """The key the fake requires; None requires none.

    llama-cpp-python skips the check when no key is configured (``authenticate`` in
    abetlen/llama-cpp-python llama_cpp/server/app.py), so "llamacpp" keeps None.
    """
    if api_key or profile == "llamacpp":
        return api_key
    prefix = "sk-proj-fake" if profile == "openai" else "gsk_fake_"
    return f"{prefix}{secrets.token_hex(16)}"


def default_models(profile: ProfileName) -> list[FakeModel]:
    """The models a profile lists when the test gives none."""
    if profile == "llamacpp":
        # One model, listed under its file path: llama-cpp-python's LlamaProxy uses the
        # path as the alias when none is given (llama_cpp/server/model.py).
        return [FakeModel(DEFAULT_MODEL_PATH, "me", 2_048, 2_048)]
    if profile == "openai":
        return list(OPENAI_MODELS)
    return list(DEFAULT_MODELS)


def install_profile(fake: FakeGroq, app: web.Application) -> str:
    """Add the routes of ``fake.profile`` (not "groq") to ``app``; returns the base path."""
    if fake.profile == "llamacpp":
        return LlamaCppServer(fake).install(app)
    if fake.profile == "openai":
        return OpenAIServer(fake).install(app)
    raise ValueError(f"no routes to install for profile {fake.profile!r}")
