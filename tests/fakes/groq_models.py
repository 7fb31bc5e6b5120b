"""FakeGroq's model list, Groq's request validation and its JSON error bodies."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from aiohttp import web

__all__ = [
    "DEFAULT_MODELS",
    "FakeModel",
    "context_length_error",
    "decommissioned_error",
    "error_response",
    "model_not_found_error",
    "prompt_tokens",
    "text_of",
    "unauthorized_error",
    "validate",
]

ALLOWED_MESSAGE_KEYS = {"role", "content"}
ROLES = {"system", "user", "assistant", "tool"}
CONTEXT_MESSAGE = "Please reduce the length of the messages or completion."


@dataclass
class FakeModel:
    """One entry of the fake's ``/models`` list."""

    id: str
    owned_by: str
    context_window: int
    max_completion_tokens: int
    active: bool = True
    created: int = 1_693_721_698

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "model",
            "created": self.created,
            "owned_by": self.owned_by,
            "active": self.active,
            "context_window": self.context_window,
            "public_apps": None,
            "max_completion_tokens": self.max_completion_tokens,
        }


DEFAULT_MODELS = (
    FakeModel("llama-3.1-8b-instant", "Meta", 131_072, 131_072),
    FakeModel("openai/gpt-oss-120b", "OpenAI", 131_072, 65_536),
    FakeModel("openai/gpt-oss-20b", "OpenAI", 131_072, 65_536),
    FakeModel("qwen/qwen3-32b", "Alibaba Cloud", 131_072, 40_960),
)


def error_response(
    status: int,
    message: str,
    kind: str = "invalid_request_error",
    code: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    """Groq's error body: ``{"error": {"message", "type", ...extra, "code"}}``."""
    error: dict[str, Any] = {"message": message, "type": kind, **extra}
    if code is not None:
        error["code"] = code
    return web.json_response({"error": error}, status=status, headers=headers)


def unauthorized_error() -> web.Response:
    return error_response(401, "Invalid API Key", code="invalid_api_key")


def decommissioned_error(model: str) -> web.Response:
    message = (
        f"The model `{model}` has been decommissioned and is no longer supported. Please "
        "refer to https://console.groq.com/docs/deprecations for a recommendation on which "
        "model to use instead."
    )
    return error_response(400, message, code="model_decommissioned")


def model_not_found_error(model: str) -> web.Response:
    message = f"The model `{model}` does not exist or you do not have access to it."
    return error_response(404, message, code="model_not_found")


def context_length_error(headers: dict[str, str] | None = None) -> web.Response:
    return error_response(
        400, CONTEXT_MESSAGE, param="messages", code="context_length_exceeded", headers=headers
    )


def text_of(content: object) -> str:
    """The text of a message's content, a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def prompt_tokens(body: dict[str, Any]) -> int:
    """A rough token count (4 characters a token) of the request's messages."""
    chars = sum(len(text_of(m.get("content"))) for m in body["messages"])
    return math.ceil(chars / 4)


def _message_problem(message: object) -> str:
    """Groq's complaint about one request message, or "" when it is acceptable."""
    if not isinstance(message, dict):
        return "value must be an object"
    extra = sorted(set(message) - ALLOWED_MESSAGE_KEYS)
    if extra:  # Groq rejects e.g. reasoning / reasoning_content / channel / refusal
        return f"property '{extra[0]}' is unsupported"
    if message.get("role") not in ROLES:
        return "property 'role' must be one of system, user, assistant, tool"
    if "content" not in message:
        return "property 'content' is missing"
    return ""


def validate(
    body: dict[str, Any], models: list[FakeModel], decommissioned: set[str]
) -> web.Response | None:
    """Groq's 400/404 answer to a chat request, or None when it is acceptable."""
    model, messages = body.get("model"), body.get("messages")
    if not isinstance(model, str) or not model:
        return error_response(400, "'model' : property 'model' is missing", param="model")
    if not isinstance(messages, list) or not messages:
        return error_response(400, "'messages' : minimum number of items is 1", param="messages")
    if model in decommissioned:
        return decommissioned_error(model)
    info = next((m for m in models if m.id == model), None)
    if info is None:
        return model_not_found_error(model)
    for i, message in enumerate(messages):
        problem = _message_problem(message)
        if problem:
            role = message.get("role") if isinstance(message, dict) else None
            return error_response(
                400,
                f"'messages.{i}' : for 'role:{role}' the following must be satisfied"
                f"[('messages.{i}' : {problem})]",
            )
    return _validate_params(body, info)


def _validate_params(body: dict[str, Any], info: FakeModel) -> web.Response | None:
    if "reasoning_format" in body and "gpt-oss" in info.id:
        message = "`reasoning_format` is not supported with this model"
        return error_response(400, message, param="reasoning_format")
    if "reasoning_format" in body and "include_reasoning" in body:
        message = "`include_reasoning` and `reasoning_format` are mutually exclusive"
        return error_response(400, message)
    if "stream_options" in body and not body.get("stream"):
        return error_response(400, "`stream_options` can only be set when `stream` is true")
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if isinstance(limit, int) and limit > info.max_completion_tokens:
        message = (
            f"`max_completion_tokens` must be less than or equal to "
            f"`{info.max_completion_tokens}`, the maximum value for "
            "`max_completion_tokens` is less than the `context_window` for this model"
        )
        return error_response(400, message, param="max_completion_tokens")
    if prompt_tokens(body) > info.context_window:
        return context_length_error()
    return None
