"""FakeGroq: a real HTTP server on 127.0.0.1 speaking Groq's OpenAI-compatible API.

Serves ``POST /openai/v1/chat/completions`` (SSE and JSON) and ``GET /openai/v1/models``
in the shapes of Groq's OpenAPI spec. Answers reveal what was received
(``turns=<user messages> last=<last user text> model=<model>``), requests are
recorded, Groq's validation errors are reproduced (extra message keys,
``reasoning_format`` on gpt-oss, unknown or retired models, oversized prompts), every
chat response carries ``x-ratelimit-*`` headers, limits can be enforced with real
429/413 answers, and faults can be scripted per request with ``script()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["DEFAULT_MODELS", "FakeGroq", "FakeModel", "go_duration"]

STATUS_FAULTS = {"401", "404", "413", "429", "500", "503"}
STATUS_FAULTS |= {"context_length_exceeded", "model_decommissioned"}
STREAM_FAULTS = {"drop", "stall", "error_event"}
FILLER = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa")
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


@dataclass
class _Fault:
    kind: str
    times: int
    params: dict[str, Any]


@dataclass
class _Windows:
    """One model's recent use: request times (day window) and (time, tokens) (minute)."""

    requests: deque[float] = field(default_factory=deque)
    tokens: deque[tuple[float, int]] = field(default_factory=deque)


@dataclass
class _Plan:
    """What one answer will stream: (kind, text) pieces and the usage to report."""

    pieces: list[tuple[str, str]]
    reasoning: str
    content: str
    prompt_tokens: int
    completion_tokens: int


def go_duration(seconds: float) -> str:
    """Format like Go's ``time.Duration``, as Groq does: ``585ms``, ``36.27s``, ``1m26.4s``."""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.2f}".rstrip("0").rstrip(".") + "s"
    if minutes or hours:
        text = f"{int(minutes)}m{text}"
    return f"{int(hours)}h{text}" if hours else text


def _seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") or "0"


def _text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


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


def _pieces(text: str, size: int = 8) -> list[str]:
    """Split like a tokenizer would, roughly: words with their spaces, long ones cut."""
    words = re.findall(r"\S+\s*|\s+", text)
    return [w[i : i + size] for w in words for i in range(0, len(w), size)]


def _error(
    status: int,
    message: str,
    kind: str = "invalid_request_error",
    code: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    error: dict[str, Any] = {"message": message, "type": kind, **extra}
    if code is not None:
        error["code"] = code
    return web.json_response({"error": error}, status=status, headers=headers)


class FakeGroq:
    """The fake server; configure attributes freely between requests."""

    def __init__(self, *, api_key: str | None = None, models: list[FakeModel] | None = None):
        self.api_key: str | None = api_key or f"gsk_fake_{secrets.token_hex(16)}"
        self.models: list[FakeModel] = list(models or DEFAULT_MODELS)
        self.decommissioned: set[str] = {"gemma2-9b-it", "llama3-70b-8192"}
        self.requests: list[dict[str, Any]] = []
        self.token_delay_s = 0.0
        self.first_token_delay_s = 0.0
        self.reply_words = 0
        self.reply_text: str | None = None
        self.reply_fn: Callable[[dict[str, Any]], str] | None = None
        self.reasoning_text = "The user wrote to me. I should answer briefly and clearly."
        self.force_raw_think = False
        # Generous defaults so headers never look exhausted unless a test asks for it.
        self.limit_rpm, self.limit_rpd, self.limit_tpm = 1_000, 500_000, 250_000
        self.enforce_rpm = self.enforce_rpd = self.enforce_tpm = False
        self.minute_s, self.day_s = 60.0, 86_400.0
        self.clock: Callable[[], float] = time.monotonic
        self.count_429 = 0
        self._faults: deque[_Fault] = deque()
        self._windows: dict[str, _Windows] = {}
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self.base_url = ""

    # ----- lifecycle and scripting -----

    async def start(self) -> None:
        """Listen on 127.0.0.1, on a free port; sets ``base_url``."""
        app = web.Application()
        app.router.add_post("/openai/v1/chat/completions", self._chat)
        app.router.add_get("/openai/v1/models", self._list_models)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}/openai/v1"

    async def aclose(self) -> None:
        """Wake stalled answers and stop the server."""
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def script(self, kind: str, times: int = 1, *, endpoint: str = "chat", **params: Any) -> None:
        """Queue a fault for the next ``times`` requests to ``endpoint`` ("chat" or "models").

        Status faults: "401", "404", "context_length_exceeded", "model_decommissioned",
        "413", "429" (``retry_after`` seconds, default 0.05; ``message_only=True`` puts it
        only in the message text), "500", "503". Stream faults: "drop" (close the
        connection after ``after_tokens``), "stall" (hang ``seconds`` after
        ``after_tokens``), "error_event" (a ``data: {"error":...}`` after ``after_tokens``).
        """
        if kind not in STATUS_FAULTS | STREAM_FAULTS:
            raise ValueError(f"unknown fault {kind!r}")
        self._faults.append(_Fault(kind, times, {"endpoint": endpoint, **params}))

    @property
    def chat_requests(self) -> list[dict[str, Any]]:
        """The recorded requests to ``/chat/completions``."""
        return [r for r in self.requests if r["path"].endswith("/chat/completions")]

    @property
    def peer_ports(self) -> set[int]:
        """Client-side ports seen: one per TCP connection the client opened."""
        return {r["peer_port"] for r in self.requests}

    def _take_fault(self, endpoint: str) -> _Fault | None:
        for fault in self._faults:
            if fault.params["endpoint"] == endpoint:
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    # ----- handlers -----

    def _record(self, request: web.Request, body: Any) -> dict[str, Any]:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        record = {
            "method": request.method,
            "path": request.path,
            "headers": dict(request.headers),
            "body": body,
            "at": self.clock(),
            "peer_port": peer[1] if peer else None,
        }
        self.requests.append(record)
        return record

    def _authorized(self, request: web.Request) -> bool:
        return self.api_key is None or (
            request.headers.get("Authorization") == f"Bearer {self.api_key}"
        )

    @staticmethod
    def _unauthorized() -> web.Response:
        return _error(401, "Invalid API Key", code="invalid_api_key")

    async def _list_models(self, request: web.Request) -> web.Response:
        self._record(request, None)
        if not self._authorized(request):
            return self._unauthorized()
        fault = self._take_fault("models")
        if fault is not None and fault.kind in STATUS_FAULTS:
            return self._fault_response(fault, "", {})
        return web.json_response({"object": "list", "data": [m.to_json() for m in self.models]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = None
        record = self._record(request, body)
        if not self._authorized(request):
            return self._unauthorized()
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object")
        model = str(body.get("model", ""))
        fault = self._take_fault("chat")
        if fault is not None and fault.kind in STATUS_FAULTS:
            return self._fault_response(fault, model, self._rate_headers(model))
        invalid = self._validate(body)
        if invalid is not None:
            return invalid
        plan = self._plan(body)
        limited = self._admit(model, body, plan)
        if limited is not None:
            return limited
        headers = self._rate_headers(model)
        if body.get("stream"):
            return await self._stream(request, body, plan, headers, fault, record)
        if fault is not None:
            if fault.kind == "drop" and request.transport is not None:
                request.transport.abort()
            elif fault.kind == "stall":
                await self._pause(float(fault.params.get("seconds", 1.0)))
            elif fault.kind == "error_event":
                return _error(500, "Internal Server Error", "internal_server_error")
        return web.json_response(self._completion(body, plan), headers=headers)

    # ----- validation like Groq's -----

    def _validate(self, body: dict[str, Any]) -> web.Response | None:
        model, messages = body.get("model"), body.get("messages")
        if not isinstance(model, str) or not model:
            return _error(400, "'model' : property 'model' is missing", param="model")
        if not isinstance(messages, list) or not messages:
            return _error(400, "'messages' : minimum number of items is 1", param="messages")
        if model in self.decommissioned:
            return self._decommissioned(model)
        info = next((m for m in self.models if m.id == model), None)
        if info is None:
            return self._model_not_found(model)
        for i, message in enumerate(messages):
            problem = _message_problem(message)
            if problem:
                role = message.get("role") if isinstance(message, dict) else None
                return _error(
                    400,
                    f"'messages.{i}' : for 'role:{role}' the following must be satisfied"
                    f"[('messages.{i}' : {problem})]",
                )
        return self._validate_params(body, info)

    def _validate_params(self, body: dict[str, Any], info: FakeModel) -> web.Response | None:
        if "reasoning_format" in body and "gpt-oss" in info.id:
            message = "`reasoning_format` is not supported with this model"
            return _error(400, message, param="reasoning_format")
        if "reasoning_format" in body and "include_reasoning" in body:
            return _error(400, "`include_reasoning` and `reasoning_format` are mutually exclusive")
        if "stream_options" in body and not body.get("stream"):
            return _error(400, "`stream_options` can only be set when `stream` is true")
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        if isinstance(limit, int) and limit > info.max_completion_tokens:
            message = (
                f"`max_completion_tokens` must be less than or equal to "
                f"`{info.max_completion_tokens}`, the maximum value for "
                "`max_completion_tokens` is less than the `context_window` for this model"
            )
            return _error(400, message, param="max_completion_tokens")
        if self._prompt_tokens(body) > info.context_window:
            return _error(400, CONTEXT_MESSAGE, param="messages", code="context_length_exceeded")
        return None

    @staticmethod
    def _decommissioned(model: str) -> web.Response:
        message = (
            f"The model `{model}` has been decommissioned and is no longer supported. Please "
            "refer to https://console.groq.com/docs/deprecations for a recommendation on which "
            "model to use instead."
        )
        return _error(400, message, code="model_decommissioned")

    @staticmethod
    def _model_not_found(model: str) -> web.Response:
        message = f"The model `{model}` does not exist or you do not have access to it."
        return _error(404, message, code="model_not_found")

    @staticmethod
    def _prompt_tokens(body: dict[str, Any]) -> int:
        chars = sum(len(_text_of(m.get("content"))) for m in body["messages"])
        return math.ceil(chars / 4)

    # ----- rate limits -----

    def _window(self, model: str) -> _Windows:
        w = self._windows.setdefault(model, _Windows())
        now = self.clock()
        while w.requests and w.requests[0] <= now - self.day_s:
            w.requests.popleft()
        while w.tokens and w.tokens[0][0] <= now - self.minute_s:
            w.tokens.popleft()
        return w

    def _admit(self, model: str, body: dict[str, Any], plan: _Plan) -> web.Response | None:
        """Enforce the enabled limits like Groq: requested = prompt + max_completion_tokens."""
        w, now = self._window(model), self.clock()
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        requested = plan.prompt_tokens + (limit if isinstance(limit, int) else 0)
        if self.enforce_tpm and requested > self.limit_tpm:
            return self._too_large(model, requested, self._rate_headers(model))
        exceeded = self._exceeded(w, now, requested)
        if exceeded is not None:
            what, limit_n, used, need, wait = exceeded
            return self._rate_limited(model, what, limit_n, used, need, wait)
        w.requests.append(now)
        w.tokens.append((now, plan.prompt_tokens + plan.completion_tokens))
        return None

    def _exceeded(
        self, w: _Windows, now: float, requested: int
    ) -> tuple[str, int, int, int, float] | None:
        """(window name, limit, used, requested, seconds to wait) of the first full window."""
        if self.enforce_rpd and len(w.requests) >= self.limit_rpd:
            wait = w.requests[0] + self.day_s - now
            return "requests per day (RPD)", self.limit_rpd, len(w.requests), 1, wait
        last_minute = [t for t in w.requests if t > now - self.minute_s]
        if self.enforce_rpm and len(last_minute) >= self.limit_rpm:
            wait = last_minute[0] + self.minute_s - now
            return "requests per minute (RPM)", self.limit_rpm, len(last_minute), 1, wait
        used = sum(n for _, n in w.tokens)
        if self.enforce_tpm and used + requested > self.limit_tpm:
            freed, wait = 0, 0.0
            for t, n in w.tokens:  # wait until enough of the oldest use has left the window
                freed, wait = freed + n, t + self.minute_s - now
                if used - freed + requested <= self.limit_tpm:
                    break
            return "tokens per minute (TPM)", self.limit_tpm, used, requested, wait
        return None

    def _rate_limited(
        self,
        model: str,
        what: str,
        limit: int,
        used: int,
        requested: int,
        wait: float,
        *,
        message_only: bool = False,
    ) -> web.Response:
        self.count_429 += 1
        wait = max(wait, 0.001)
        headers = self._rate_headers(model)
        if not message_only:
            headers["retry-after"] = _seconds(wait)
        message = (
            f"Rate limit reached for model `{model}` in organization `org_fake` service tier "
            f"`on_demand` on {what}: Limit {limit}, Used {used}, Requested {requested}. "
            f"Please try again in {go_duration(wait)}."
        )
        kind = "tokens" if "TPM" in what else "requests"
        return _error(429, message, kind, "rate_limit_exceeded", headers)

    def _too_large(self, model: str, requested: int, headers: dict[str, str]) -> web.Response:
        message = (
            f"Request too large for model `{model}` in organization `org_fake` service tier "
            f"`on_demand` on tokens per minute (TPM): Limit {self.limit_tpm}, Requested "
            f"{requested}, please reduce your message size and try again."
        )
        return _error(413, message, "tokens", "rate_limit_exceeded", headers)

    def _rate_headers(self, model: str) -> dict[str, str]:
        w, now = self._window(model), self.clock()
        used_tokens = sum(n for _, n in w.tokens)
        reset_req = w.requests[0] + self.day_s - now if w.requests else 0.0
        reset_tok = w.tokens[0][0] + self.minute_s - now if w.tokens else 0.0
        return {
            "x-ratelimit-limit-requests": str(self.limit_rpd),
            "x-ratelimit-remaining-requests": str(max(0, self.limit_rpd - len(w.requests))),
            "x-ratelimit-reset-requests": go_duration(reset_req),
            "x-ratelimit-limit-tokens": str(self.limit_tpm),
            "x-ratelimit-remaining-tokens": str(max(0, self.limit_tpm - used_tokens)),
            "x-ratelimit-reset-tokens": go_duration(reset_tok),
        }

    # ----- scripted status faults -----

    def _fault_response(self, fault: _Fault, model: str, headers: dict[str, str]) -> web.Response:
        kind, params = fault.kind, fault.params
        if kind == "401":
            return self._unauthorized()
        if kind == "404":
            return self._model_not_found(model or "unknown-model")
        if kind == "context_length_exceeded":
            return _error(400, CONTEXT_MESSAGE, param="messages", code=kind, headers=headers)
        if kind == "model_decommissioned":
            return self._decommissioned(model)
        if kind == "413":
            return self._too_large(model, self.limit_tpm + 1000, headers)
        if kind == "429":
            wait = float(params.get("retry_after", 0.05))
            what = "tokens per minute (TPM)"
            only = bool(params.get("message_only"))
            return self._rate_limited(
                model, what, self.limit_tpm, self.limit_tpm, 100, wait, message_only=only
            )
        if kind == "503":
            message = "Service Unavailable: the model is over capacity."
            return _error(503, message, "internal_server_error", headers=headers)
        return _error(500, "Internal Server Error", "internal_server_error", headers=headers)

    # ----- answers -----

    def _reasoning_mode(self, body: dict[str, Any]) -> str:
        """How to answer with reasoning, like Groq: "field", "think" or "none".

        "field" streams ``delta.reasoning``; "think" puts ``<think>…</think>`` in content.
        """
        model = str(body["model"])
        if self.force_raw_think:
            return "think"
        if "gpt-oss" in model:
            return "none" if body.get("include_reasoning") is False else "field"
        if "qwen3" in model or "deepseek-r1" in model:
            if body.get("include_reasoning") is False or body.get("reasoning_effort") == "none":
                return "none"
            form = str(body.get("reasoning_format") or "raw")
            return {"parsed": "field", "hidden": "none"}.get(form, "think")
        return "none"

    def _reply(self, body: dict[str, Any]) -> str:
        if self.reply_fn is not None:
            return self.reply_fn(body)
        if self.reply_text is not None:
            return self.reply_text
        users = [m for m in body["messages"] if m.get("role") == "user"]
        last = _text_of(users[-1].get("content")) if users else ""
        text = f"turns={len(users)} last={last} model={body['model']}"
        filler = [FILLER[i % len(FILLER)] for i in range(self.reply_words)]
        return " ".join([text, *filler])

    def _plan(self, body: dict[str, Any]) -> _Plan:
        reply, mode = self._reply(body), self._reasoning_mode(body)
        reasoning = self.reasoning_text if mode != "none" else ""
        pieces = [("reasoning", p) for p in _pieces(reasoning)] if mode == "field" else []
        content = f"<think>\n{reasoning}\n</think>\n\n{reply}" if mode == "think" else reply
        pieces += [("content", p) for p in _pieces(content)]
        completion = math.ceil(len(reasoning if mode == "field" else "") / 4 + len(content) / 4)
        return _Plan(pieces, reasoning, content, self._prompt_tokens(body), completion)

    @staticmethod
    def _usage(plan: _Plan) -> dict[str, Any]:
        return {
            "queue_time": 0.01,
            "prompt_tokens": plan.prompt_tokens,
            "prompt_time": 0.002,
            "completion_tokens": plan.completion_tokens,
            "completion_time": 0.03,
            "total_tokens": plan.prompt_tokens + plan.completion_tokens,
            "total_time": 0.032,
        }

    def _completion(self, body: dict[str, Any], plan: _Plan) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": plan.content}
        if any(kind == "reasoning" for kind, _ in plan.pieces):
            message["reasoning"] = plan.reasoning
        return {
            "id": f"chatcmpl-{uuid.uuid4()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
            ],
            "usage": self._usage(plan),
            "system_fingerprint": "fp_fake",
            "x_groq": {"id": f"req_{uuid.uuid4().hex}"},
        }

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake early when the server closes."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), seconds)

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        plan: _Plan,
        headers: dict[str, str],
        fault: _Fault | None,
        record: dict[str, Any],
    ) -> web.StreamResponse:
        """Stream ``plan``; ``record["first_token_at"]`` notes when the first piece left,
        so benchmarks can subtract the fake's own time to first token."""
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                **headers,
            }
        )
        await response.prepare(request)
        base = {
            "id": f"chatcmpl-{uuid.uuid4()}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": "fp_fake",
        }
        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        request_id = f"req_{uuid.uuid4().hex}"

        async def send(delta: dict[str, Any], finish: str | None = None, **more: Any) -> None:
            chunk = {
                **base,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
                **more,
            }
            if with_usage and "usage" not in chunk:
                chunk["usage"] = None
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        try:
            await send({"role": "assistant", "content": ""}, x_groq={"id": request_id})
            await self._pause(self.first_token_delay_s)
            after = int(fault.params.get("after_tokens", 3)) if fault else -1
            for sent, (kind, text) in enumerate([*plan.pieces, ("end", "")]):
                if (
                    sent == after
                    and fault is not None
                    and await self._stream_fault(fault, request, response)
                ):
                    return response
                if kind == "end":
                    break
                await send({kind: text})
                record.setdefault("first_token_at", self.clock())
                await self._pause(self.token_delay_s)
            usage = self._usage(plan)
            await send({}, "stop", x_groq={"id": request_id, "usage": usage})
            if with_usage:  # the extra usage-only chunk of stream_options.include_usage
                chunk = {**base, "choices": [], "usage": usage, "x_groq": {"id": request_id}}
                await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away (its idle timeout, or the test ended)
        return response

    async def _stream_fault(
        self, fault: _Fault, request: web.Request, response: web.StreamResponse
    ) -> bool:
        """Apply a stream fault; True when the answer must end here."""
        if fault.kind == "stall":
            await self._pause(float(fault.params.get("seconds", 1.0)))
            return False
        if fault.kind == "error_event":
            error = {
                "message": fault.params.get("message", "Internal Server Error"),
                "type": fault.params.get("type", "internal_server_error"),
            }
            if "code" in fault.params:
                error["code"] = fault.params["code"]
            await response.write(f"data: {json.dumps({'error': error})}\n\n".encode())
            await response.write_eof()
            return True
        if request.transport is not None:  # "drop": no terminating chunk, no [DONE]
            request.transport.abort()
        return True
