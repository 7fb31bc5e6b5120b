"""FakeGroq: a real HTTP server on 127.0.0.1 speaking Groq's OpenAI-compatible API.

Serves ``POST /openai/v1/chat/completions`` (SSE and JSON) and ``GET /openai/v1/models``
in the shapes of Groq's OpenAPI spec. Answers reveal what was received
(``turns=<user messages> last=<last user text> model=<model>``), requests are
recorded, Groq's validation errors are reproduced (extra message keys,
``reasoning_format`` on gpt-oss, unknown or retired models, oversized prompts), every
chat response carries ``x-ratelimit-*`` headers, limits can be enforced with real
429/413 answers, and faults can be scripted per request with ``script()``.

The model list and validation are in ``groq_models``, the limits and their headers
in ``groq_limits``, the answers' text and bodies in ``groq_answers``.

``profile="llamacpp"`` or ``"openai"`` makes it answer like llama.cpp's server or
api.openai.com instead, under ``/v1``: see ``server_profiles``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from tests.fakes.groq_answers import FILLER, Plan, completion, echo_reply, plan_answer, usage
from tests.fakes.groq_limits import RateLimits, go_duration
from tests.fakes.groq_models import (
    DEFAULT_MODELS,
    FakeModel,
    context_length_error,
    decommissioned_error,
    error_response,
    model_not_found_error,
    unauthorized_error,
    validate,
)
from tests.fakes.server_profiles import (
    ProfileName,
    default_api_key,
    default_models,
    install_profile,
)

# FakeModel, DEFAULT_MODELS, FILLER and go_duration are re-exported: tests import them here.
__all__ = ["DEFAULT_MODELS", "FILLER", "FakeGroq", "FakeModel", "go_duration"]

STATUS_FAULTS = {"401", "404", "413", "429", "500", "503"}
STATUS_FAULTS |= {"context_length_exceeded", "model_decommissioned"}
STREAM_FAULTS = {"drop", "stall", "error_event"}


@dataclass
class _Fault:
    kind: str
    times: int
    params: dict[str, Any]


class FakeGroq:
    """The fake server; configure attributes freely between requests."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        models: list[FakeModel] | None = None,
        profile: ProfileName = "groq",
    ):
        self.profile: ProfileName = profile
        self.api_key: str | None = default_api_key(profile, api_key)
        self.models: list[FakeModel] = list(models or default_models(profile))
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
        self._limits = RateLimits(self)  # reads the limit attributes above on each request
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self.base_url = ""
        # The "llamacpp" profile's knobs (profile_llamacpp says where each comes from).
        self.n_ctx = 2_048
        self.props_enabled = True
        self.llamacpp_errors: Literal["llama-cpp-python", "llama.cpp"] = "llama-cpp-python"
        self.stream_overflow: Literal["drop", "error"] = "drop"
        self.overflow_counts_max_tokens = False

    # ----- lifecycle and scripting -----

    async def start(self) -> None:
        """Listen on 127.0.0.1, on a free port; sets ``base_url``."""
        app = web.Application()
        if self.profile == "groq":
            app.router.add_post("/openai/v1/chat/completions", self._chat)
            app.router.add_get("/openai/v1/models", self._list_models)
            path = "/openai/v1"
        else:
            path = install_profile(self, app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}{path}"

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
        The other profiles take the stream faults only.
        """
        if kind not in STATUS_FAULTS | STREAM_FAULTS:
            raise ValueError(f"unknown fault {kind!r}")
        if kind in STATUS_FAULTS and self.profile != "groq":
            raise ValueError(f"status fault {kind!r} is Groq-shaped; profile is {self.profile}")
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

    async def _list_models(self, request: web.Request) -> web.Response:
        self._record(request, None)
        if not self._authorized(request):
            return unauthorized_error()
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
            return unauthorized_error()
        if not isinstance(body, dict):
            return error_response(400, "request body must be a JSON object")
        model = str(body.get("model", ""))
        fault = self._take_fault("chat")
        if fault is not None and fault.kind in STATUS_FAULTS:
            return self._fault_response(fault, model, self._limits.headers(model))
        invalid = validate(body, self.models, self.decommissioned)
        if invalid is not None:
            return invalid
        reply = self._reply(body)
        plan = plan_answer(body, reply, self.reasoning_text, self.force_raw_think)
        limited = self._limits.admit(model, body, plan.prompt_tokens, plan.completion_tokens)
        if limited is not None:
            return limited
        headers = self._limits.headers(model)
        if body.get("stream"):
            return await self._stream(request, body, plan, headers, fault, record)
        if fault is not None:
            if fault.kind == "drop" and request.transport is not None:
                request.transport.abort()
            elif fault.kind == "stall":
                await self._pause(float(fault.params.get("seconds", 1.0)))
            elif fault.kind == "error_event":
                return error_response(500, "Internal Server Error", "internal_server_error")
        return web.json_response(completion(body, plan), headers=headers)

    # ----- scripted status faults -----

    def _fault_response(self, fault: _Fault, model: str, headers: dict[str, str]) -> web.Response:
        kind, params = fault.kind, fault.params
        if kind == "401":
            return unauthorized_error()
        if kind == "404":
            return model_not_found_error(model or "unknown-model")
        if kind == "context_length_exceeded":
            return context_length_error(headers)
        if kind == "model_decommissioned":
            return decommissioned_error(model)
        if kind == "413":
            return self._limits.too_large(model, self.limit_tpm + 1000, headers)
        if kind == "429":
            wait = float(params.get("retry_after", 0.05))
            what = "tokens per minute (TPM)"
            only = bool(params.get("message_only"))
            return self._limits.rate_limited(
                model, what, self.limit_tpm, self.limit_tpm, 100, wait, message_only=only
            )
        if kind == "503":
            message = "Service Unavailable: the model is over capacity."
            return error_response(503, message, "internal_server_error", headers=headers)
        return error_response(
            500, "Internal Server Error", "internal_server_error", headers=headers
        )

    # ----- answers -----

    def _reply(self, body: dict[str, Any]) -> str:
        if self.reply_fn is not None:
            return self.reply_fn(body)
        if self.reply_text is not None:
            return self.reply_text
        return echo_reply(body, self.reply_words)

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake early when the server closes."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), seconds)

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        plan: Plan,
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
            totals = usage(plan)
            await send({}, "stop", x_groq={"id": request_id, "usage": totals})
            if with_usage:  # the extra usage-only chunk of stream_options.include_usage
                chunk = {**base, "choices": [], "usage": totals, "x_groq": {"id": request_id}}
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
