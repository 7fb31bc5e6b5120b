"""FakeGroq's "llamacpp" profile: a small model behind llama-cpp-python's server, with
llama.cpp's own ``/props`` and, on request, llama-server's error bodies.

Each behaviour is taken from the servers' source, not from what the bot expects:

- abetlen/llama-cpp-python ``llama_cpp/server/app.py``: the routes; ``authenticate``
  skips the check when no key is configured and otherwise answers 401
  ``{"detail": "Invalid API key"}`` (FastAPI's HTTPException); ``get_models`` lists
  ``{"id", "object": "model", "owned_by": "me", "permissions": []}`` (no context size);
  there is no ``/props`` (``props_enabled = False``: FastAPI's 404).
- ``llama_cpp/server/types.py``: ``CreateChatCompletionRequest`` has ``max_tokens``
  (default None) but neither ``max_completion_tokens`` nor ``stream_options``; pydantic
  drops unknown fields, so both are ignored. ``server/model.py``: an unknown or missing
  ``model`` falls back to the one loaded.
- ``llama_cpp/llama.py`` ``_create_completion``: prompt tokens >= n_ctx raises
  "Requested tokens (P) exceed context window of N"; otherwise ``max_tokens`` (None or
  <= 0: unlimited) is cut to ``n_ctx - P``, so prompt + max_tokens > n_ctx is *not* an
  error: the answer stops with ``finish_reason`` "length". (``overflow_counts_max_tokens
  = True`` makes it an error instead, for tests that want that stricter server.)
  Streamed chunks carry no ``usage`` (``_convert_text_completion_chunks_to_chat``); the
  non-streamed completion does.
- ``llama_cpp/server/errors.py``: that ValueError becomes 400 ``{"error": {"message":
  "This model's maximum context length is N tokens. However, you requested P+M tokens
  (P in the messages, M in the completion). Please reduce the length of the messages or
  completion.", "type": "invalid_request_error", "param": "messages", "code":
  "context_length_exceeded"}}``, M printed as sent ("None" when absent).
- Streamed overflow (``stream_overflow = "drop"``): observed against a real
  llama-cpp-python server: 200, ``text/event-stream``, not one body byte, then the
  connection drops. Early ``app.py`` returned the EventSourceResponse before the
  generator ran, so the ValueError fired after the headers; later ``app.py`` pulls the
  first chunk first ("EAFP") and answers the 400 instead: ``stream_overflow = "error"``.
- ggml-org/llama.cpp ``tools/server`` (server-context.cpp ``get_props``, README "GET
  /props"): ``/props`` is public (no key check) and carries
  ``default_generation_settings.n_ctx`` (the per-slot context), ``total_slots``,
  ``model_path``…, no top-level ``n_ctx``. Its overflow (prompt tokens >= slot n_ctx,
  same rule) is 400 ``{"error": {"code": 400, "message": "request (P tokens) exceeds the
  available context size (N tokens), try increasing it", "type":
  "exceed_context_size_error", "n_prompt_tokens": P, "n_ctx": N}}`` and its 401
  ``{"error": {"code": 401, "message": "Invalid API Key", "type":
  "authentication_error"}}`` (``format_error_response``; README's error format):
  ``llamacpp_errors = "llama.cpp"``.
- Neither server sends ``x-ratelimit-*`` headers.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.fakes.groq_models import text_of
from tests.fakes.profile_common import (
    Answer,
    ChunkFn,
    cut_answer,
    open_stream,
    plain_fault,
    stream_answer,
)

if TYPE_CHECKING:
    from tests.fakes.groq_server import FakeGroq

__all__ = ["DEFAULT_MODEL_PATH", "TEMPLATE_TOKENS", "LlamaCppServer", "prompt_tokens"]

DEFAULT_MODEL_PATH = "/models/SmolLM2-360M-Instruct-Q8_0.gguf"
TEMPLATE_TOKENS = 6  # ChatML's "<|im_start|>user\n" … "<|im_end|>\n" around each message
CHARS_PER_TOKEN = 3.5
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
)


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """A deterministic tokenizer-like count: ceil(chars / 3.5) per message plus
    ``TEMPLATE_TOKENS`` for its chat-template wrapping.

    Deliberately more than the chars / 4 rule of thumb: real tokenizers split code,
    numbers and short words finer, so a client budgeting with chars / 4 undercounts.
    """
    return sum(
        math.ceil(len(text_of(m.get("content"))) / CHARS_PER_TOKEN) + TEMPLATE_TOKENS
        for m in messages
    )


class LlamaCppServer:
    """The llama.cpp routes, reading the fake's knobs on every request."""

    def __init__(self, fake: FakeGroq) -> None:
        self.fake = fake

    def install(self, app: web.Application) -> str:
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/props", self.props)
        return "/v1"

    # ----- auth and errors -----

    def _authorized(self, request: web.Request) -> bool:
        key = self.fake.api_key
        return key is None or request.headers.get("Authorization") == f"Bearer {key}"

    def _unauthorized(self) -> web.Response:
        if self.fake.llamacpp_errors == "llama.cpp":
            error = {"code": 401, "message": "Invalid API Key", "type": "authentication_error"}
            return web.json_response({"error": error}, status=401)
        return web.json_response({"detail": "Invalid API key"}, status=401)

    def _overflow_error(self, prompt: int, max_tokens: object) -> web.Response:
        n_ctx = self.fake.n_ctx
        if self.fake.llamacpp_errors == "llama.cpp":
            error: dict[str, Any] = {
                "code": 400,
                "message": f"request ({prompt} tokens) exceeds the available context size "
                f"({n_ctx} tokens), try increasing it",
                "type": "exceed_context_size_error",
                "n_prompt_tokens": prompt,
                "n_ctx": n_ctx,
            }
            return web.json_response({"error": error}, status=400)
        requested = prompt + (max_tokens if isinstance(max_tokens, int) else 0)
        error = {
            "message": f"This model's maximum context length is {n_ctx} tokens. However, "
            f"you requested {requested} tokens ({prompt} in the messages, {max_tokens} in "
            "the completion). Please reduce the length of the messages or completion.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
        return web.json_response({"error": error}, status=400)

    # ----- routes -----

    async def models(self, request: web.Request) -> web.Response:
        self.fake._record(request, None)
        if not self._authorized(request):
            return self._unauthorized()
        data = [
            {"id": m.id, "object": "model", "owned_by": m.owned_by, "permissions": []}
            for m in self.fake.models
        ]
        return web.json_response({"object": "list", "data": data})

    async def props(self, request: web.Request) -> web.Response:
        self.fake._record(request, None)
        if not self.fake.props_enabled:  # llama-cpp-python has no such route
            return web.json_response({"detail": "Not Found"}, status=404)
        path = self.fake.models[0].id
        settings = {
            "id": 0,
            "id_task": -1,
            "n_ctx": self.fake.n_ctx,
            "speculative": False,
            "is_processing": False,
            "params": {"n_predict": -1, "temperature": 0.8, "top_k": 40, "top_p": 0.95},
            "prompt": "",
            "next_token": {"has_next_token": True, "n_remain": -1, "n_decoded": 0},
        }
        return web.json_response(
            {
                "default_generation_settings": settings,
                "total_slots": 1,
                "model_alias": path,
                "model_path": path,
                "modalities": {"vision": False, "audio": False},
                "chat_template": CHATML,
                "build_info": "b0-fake",
                "is_sleeping": False,
            }
        )

    async def chat(self, request: web.Request) -> web.StreamResponse:
        fake = self.fake
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = None
        record = fake._record(request, body)
        if not self._authorized(request):
            return self._unauthorized()
        messages = (body.get("messages") or []) if isinstance(body, dict) else None
        if not isinstance(body, dict) or not isinstance(messages, list):
            return _unprocessable("body")
        if not all(isinstance(m, dict) for m in messages):
            return _unprocessable("messages")
        # LlamaProxy serves the loaded model whatever the request names.
        body = {**body, "model": body.get("model") or fake.models[0].id, "messages": messages}
        prompt = prompt_tokens(messages)
        record["prompt_tokens"] = prompt
        max_tokens = body.get("max_tokens")  # max_completion_tokens: not in the request model
        limit = max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else None
        if prompt >= fake.n_ctx or (
            fake.overflow_counts_max_tokens and limit is not None and prompt + limit > fake.n_ctx
        ):
            return await self._overflow(request, body, prompt, max_tokens)
        room = fake.n_ctx - prompt
        answer = cut_answer(fake._reply(body), prompt, room if limit is None else min(limit, room))
        fault = fake._take_fault("chat")
        if body.get("stream"):  # stream_options.include_usage is ignored: no usage chunk
            response = await open_stream(request, {})
            chunk = _chunker(body["model"])
            first = {"role": "assistant"}
            return await stream_answer(
                fake, request, response, answer, chunk, first, fault, record, []
            )
        await plain_fault(fake, request, fault)
        return web.json_response(_completion(body["model"], answer))

    async def _overflow(
        self, request: web.Request, body: dict[str, Any], prompt: int, max_tokens: object
    ) -> web.StreamResponse:
        if body.get("stream") and self.fake.stream_overflow == "drop":
            # The headers go out, then the connection dies before any body byte.
            response = await open_stream(request, {})
            if request.transport is not None:
                request.transport.abort()
            return response
        return self._overflow_error(prompt, max_tokens)


def _unprocessable(where: str) -> web.Response:
    """FastAPI's 422 for a body its pydantic model rejects."""
    detail = [{"type": "invalid", "loc": ["body", where], "msg": "Input should be valid"}]
    return web.json_response({"detail": detail}, status=422)


def _chunker(model: str) -> ChunkFn:
    """Chunks shaped like llama-cpp-python's ``chat.completion.chunk`` (no usage)."""
    base = {
        "id": f"chatcmpl-{uuid.uuid4()}",
        "model": model,
        "created": int(time.time()),
        "object": "chat.completion.chunk",
    }

    def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**base, "choices": [choice]}

    return chunk


def _completion(model: str, answer: Answer) -> dict[str, Any]:
    message = {"role": "assistant", "content": answer.content}
    finish = answer.finish_reason
    return {
        "id": f"chatcmpl-{uuid.uuid4()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.completion_tokens,
            "total_tokens": answer.prompt_tokens + answer.completion_tokens,
        },
    }
