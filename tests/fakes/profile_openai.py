"""FakeGroq's "openai" profile: the shapes of api.openai.com's chat completions.

Each behaviour is taken from OpenAI's documentation or from responses quoted in public
issues, not from what the bot expects:

- ``GET /v1/models``: the Model object of the API reference (openai/openai-openapi
  ``Model``): ``id``, ``object``, ``created``, ``owned_by``; no context window. The
  context size (``FakeModel.context_window``) is only used to refuse long prompts;
  give a model a small one to test that.
- Rate-limit headers (https://platform.openai.com/docs/guides/rate-limits, "Rate limits
  in headers"): ``x-ratelimit-limit-requests`` / ``-tokens``, ``-remaining-*``,
  ``-reset-*`` as Go durations ("1s", "6m0s"). The request headers count requests per
  MINUTE (the docs' sample: limit 60, reset 1s), where Groq's count requests per DAY
  (https://console.groq.com/docs/rate-limits). A reset is the time until the limit is
  back to its initial state; OpenAI replenishes continuously (one request of 5,000 RPM
  shows "12ms", https://community.openai.com/t/1268905), so each limit is a bucket
  refilled at limit/minute. Limits come from the fake's ``limit_rpm`` / ``limit_tpm``;
  a request costs its prompt tokens plus its completion cap (or, without one, the
  tokens it got).
- ``stream_options.include_usage`` (openai-openapi ``ChatCompletionStreamOptions``): one
  more chunk before ``[DONE]`` with the usage and ``choices: []``; every other chunk
  then carries ``"usage": null``. Without it: no usage at all in the stream.
- ``max_completion_tokens`` (or the older ``max_tokens``) caps the answer:
  ``finish_reason`` "length".
- Unknown request arguments: 400 ``{"message": "Unrecognized request argument supplied:
  X", "type": "invalid_request_error", "param": null, "code": null}``
  (davidmigloz/langchain_dart#712; several: "Unrecognized request arguments supplied: a,
  b", langchain-ai/langchain#8593). Known arguments: ``CreateChatCompletionRequest`` of
  openai/openai-openapi.
- Context overflow: 400, ``param`` "messages", ``code`` "context_length_exceeded":
  "This model's maximum context length is N tokens. However, your messages resulted in
  M tokens. Please reduce the length of the messages." (chathub-dev/chathub#126), or
  with a completion cap "... However, you requested T tokens (M in the messages, C in
  the completion). Please reduce the length of the messages or completion."
  (conghaonet/hao_chatgpt#4).
- 401: no key, "You didn't provide an API key. …" (yihong0618/bilingual_book_maker#137);
  a wrong one, "Incorrect API key provided: sk-PMafP***…E873. You can find your API key
  at https://platform.openai.com/account/api-keys." with ``code`` "invalid_api_key"
  (popjane/free_chatgpt_api#3).
- 404 ``model_not_found`` "The model `x` does not exist or you do not have access to
  it." (rd-1-2022/ai-openai-helloworld#9); 400 "you must provide a model parameter"
  (danielmiessler/Fabric#239); 400 "Missing required parameter: 'messages'." with
  ``code`` "missing_required_parameter" (SilasMarvin/lsp-ai#108). A body that is not
  JSON gets a 400 with the start of OpenAI's wording (its long hint left out).
- Prompt tokens: the openai-cookbook "How to count tokens with tiktoken" rule, 3 tokens
  per message plus its role and content, plus 3 priming the reply; content counted as
  ceil(chars / 4), OpenAI's rule of thumb.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.fakes.groq_limits import go_duration
from tests.fakes.groq_models import FakeModel, text_of
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

__all__ = ["CHAT_ARGUMENTS", "OPENAI_MODELS", "OpenAIServer", "prompt_tokens"]

# Context windows and output caps from OpenAI's model pages; `created` as /v1/models shows.
OPENAI_MODELS = (
    FakeModel("gpt-4o-mini", "system", 128_000, 16_384, created=1_721_172_741),
    FakeModel("gpt-4o", "system", 128_000, 16_384, created=1_715_367_049),
    FakeModel("gpt-4.1-mini", "system", 1_047_576, 32_768, created=1_744_318_173),
)

# The properties of CreateChatCompletionRequest (openai/openai-openapi).
CHAT_ARGUMENTS = frozenset(
    {
        "audio", "frequency_penalty", "function_call", "functions", "logit_bias",
        "logprobs", "max_completion_tokens", "max_tokens", "messages", "metadata",
        "modalities", "model", "n", "parallel_tool_calls", "prediction",
        "presence_penalty", "prompt_cache_key", "reasoning_effort", "response_format",
        "safety_identifier", "seed", "service_tier", "stop", "store", "stream",
        "stream_options", "temperature", "tool_choice", "tools", "top_logprobs", "top_p",
        "user", "verbosity", "web_search_options",
    }
)  # fmt: skip
NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password "
    "field (with blank username) if you're accessing the API from your browser and are "
    "prompted for a username and password. You can obtain an API key from "
    "https://platform.openai.com/account/api-keys."
)


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """The cookbook's count with content as ceil(chars / 4): 3 + 1 (role) + content per
    message, plus 3 priming the reply."""
    content = sum(math.ceil(len(text_of(m.get("content"))) / 4) for m in messages)
    return content + 4 * len(messages) + 3


def error(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> web.Response:
    body = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return web.json_response({"error": body}, status=status)


def _masked(key: str) -> str:
    """A key as OpenAI echoes it: the first 8 and last 4 characters."""
    return key[:8] + "*" * max(0, len(key) - 12) + key[-4:] if len(key) > 12 else key


@dataclass
class _Bucket:
    level: float
    at: float


class RateBuckets:
    """Per-model requests and tokens per minute, refilled continuously like OpenAI's."""

    def __init__(self, fake: FakeGroq) -> None:
        self.fake = fake
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def _refill(self, key: tuple[str, str], limit: int, now: float) -> _Bucket:
        bucket = self._buckets.setdefault(key, _Bucket(float(limit), now))
        bucket.level = min(float(limit), bucket.level + (now - bucket.at) * limit / self._window)
        bucket.at = now
        return bucket

    @property
    def _window(self) -> float:
        return self.fake.minute_s

    def charge(self, model: str, tokens: int) -> dict[str, str]:
        """Take one request and ``tokens`` tokens; the headers of the response."""
        now, headers = self.fake.clock(), {}
        for kind, limit, cost in (
            ("requests", self.fake.limit_rpm, 1),
            ("tokens", self.fake.limit_tpm, tokens),
        ):
            bucket = self._refill((model, kind), limit, now)
            bucket.level -= cost
            reset = max(0.0, limit - bucket.level) * self._window / limit
            headers[f"x-ratelimit-limit-{kind}"] = str(limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(bucket.level)))
            headers[f"x-ratelimit-reset-{kind}"] = go_duration(reset)
        return headers


class OpenAIServer:
    """The OpenAI routes, reading the fake's knobs on every request."""

    def __init__(self, fake: FakeGroq) -> None:
        self.fake = fake
        self.limits = RateBuckets(fake)

    def install(self, app: web.Application) -> str:
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.models)
        return "/v1"

    def _auth_error(self, request: web.Request) -> web.Response | None:
        key = self.fake.api_key
        given = request.headers.get("Authorization", "")
        if key is None or given == f"Bearer {key}":
            return None
        if not given.startswith("Bearer ") or not given[7:].strip():
            return error(401, NO_KEY)
        message = (
            f"Incorrect API key provided: {_masked(given[7:])}. You can find your API key "
            "at https://platform.openai.com/account/api-keys."
        )
        return error(401, message, code="invalid_api_key")

    async def models(self, request: web.Request) -> web.Response:
        self.fake._record(request, None)
        refused = self._auth_error(request)
        if refused is not None:
            return refused
        data = [
            {"id": m.id, "object": "model", "created": m.created, "owned_by": m.owned_by}
            for m in self.fake.models
        ]
        return web.json_response({"object": "list", "data": data})

    def _invalid(self, body: dict[str, Any]) -> web.Response | None:
        """OpenAI's 400/404 for a request it refuses before generating, or None."""
        unknown = sorted(set(body) - CHAT_ARGUMENTS)
        if unknown:
            many = "s" if len(unknown) > 1 else ""
            return error(400, f"Unrecognized request argument{many} supplied: {', '.join(unknown)}")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return error(400, "you must provide a model parameter")
        messages = body.get("messages")
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            message = "Missing required parameter: 'messages'."
            return error(400, message, param="messages", code="missing_required_parameter")
        if not any(m.id == model for m in self.fake.models):
            message = f"The model `{model}` does not exist or you do not have access to it."
            return error(404, message, code="model_not_found")
        return None

    async def chat(self, request: web.Request) -> web.StreamResponse:
        fake = self.fake
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = None
        record = fake._record(request, body)
        refused = self._auth_error(request)
        if refused is not None:
            return refused
        if not isinstance(body, dict):
            return error(400, "We could not parse the JSON body of your request.")
        invalid = self._invalid(body)
        if invalid is not None:
            return invalid
        info = next(m for m in fake.models if m.id == body["model"])
        prompt = prompt_tokens(body["messages"])
        record["prompt_tokens"] = prompt
        cap = _cap(body)
        overflow = _overflow(info.context_window, prompt, cap)
        if overflow is not None:
            return overflow
        most = min(info.max_completion_tokens, info.context_window - prompt)
        limit = most if cap is None else min(cap, most)
        answer = cut_answer(fake._reply(body), prompt, limit)
        headers = self.limits.charge(info.id, prompt + (cap or answer.completion_tokens))
        fault = fake._take_fault("chat")
        if body.get("stream"):
            response = await open_stream(request, headers)
            with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            chunk, tail = _chunker(body["model"], answer, with_usage)
            first = {"role": "assistant", "content": "", "refusal": None}
            return await stream_answer(
                fake, request, response, answer, chunk, first, fault, record, tail
            )
        await plain_fault(fake, request, fault)
        return web.json_response(_completion(body["model"], answer), headers=headers)


def _cap(body: dict[str, Any]) -> int | None:
    """The completion cap asked for: ``max_completion_tokens``, else ``max_tokens``."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _overflow(context: int, prompt: int, cap: int | None) -> web.Response | None:
    start = f"This model's maximum context length is {context} tokens. However, "
    if cap is not None and prompt + cap > context:
        message = (
            f"{start}you requested {prompt + cap} tokens ({prompt} in the messages, {cap} in "
            "the completion). Please reduce the length of the messages or completion."
        )
    elif prompt > context:
        message = (
            f"{start}your messages resulted in {prompt} tokens. "
            "Please reduce the length of the messages."
        )
    else:
        return None
    return error(400, message, param="messages", code="context_length_exceeded")


def _usage(answer: Answer) -> dict[str, Any]:
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _base(model: str, kind: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{secrets.token_urlsafe(21)}",
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
    }


def _chunker(model: str, answer: Answer, with_usage: bool) -> tuple[ChunkFn, list[dict[str, Any]]]:
    """The chunk builder and the events after the finish chunk (the usage chunk)."""
    base = _base(model, "chat.completion.chunk")
    extra: dict[str, Any] = {"usage": None} if with_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**base, "choices": [choice], **extra}

    tail = [{**base, "choices": [], "usage": _usage(answer)}] if with_usage else []
    return chunk, tail


def _completion(model: str, answer: Answer) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": answer.content,
        "refusal": None,
        "annotations": [],
    }
    finish = answer.finish_reason
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
    return {**_base(model, "chat.completion"), "choices": [choice], "usage": _usage(answer)}
