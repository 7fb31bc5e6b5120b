"""FakeGroq: a real HTTP server on 127.0.0.1 speaking Groq's OpenAI-compatible API.

Serves ``POST /openai/v1/chat/completions`` (SSE and JSON) and ``GET /openai/v1/models``
in the shapes of Groq's OpenAPI spec. Answers reveal what was received
(``turns=<user messages> last=<last user text> model=<model>``), requests are
recorded, Groq's validation errors are reproduced (extra message keys,
``reasoning_format`` on gpt-oss, unknown or retired models, oversized prompts), every
chat response carries ``x-ratelimit-*`` headers, limits can be enforced with real
429/413 answers, and faults can be scripted per request with ``script()``.

Limits (``groq_limits`` says how each follows Groq): ``limit_rpm`` / ``limit_rpd`` /
``limit_tpm`` / ``limit_tpd`` are plain numbers (``use_tier`` copies one of ``GROQ_TIERS``),
checked only where ``enforce_*`` is True but always charged and reported. Buckets refill
continuously; a request is charged prompt + cap when admitted and refunded the unused
part when its answer ends, unless ``keep_cap_charged``. ``stats(model)``, ``count_429``
(every 429 the fake answered over HTTP), ``other_count_429`` and ``allowed(...)`` are for
assertions; ``burn(...)`` and ``start_other_client(...)`` spend the same key as another
client would. Time is ``clock`` (monotonic seconds) and ``sleep`` (set both to a
``FakeClock``'s ``now`` and ``sleep`` to run on virtual time).

The model list and validation are in ``groq_models``, the limits and their headers
in ``groq_limits``, the answers' text and bodies in ``groq_answers``.

``profile="llamacpp"`` or ``"openai"`` makes it answer like llama.cpp's server or
api.openai.com instead, under ``/v1``: see ``server_profiles``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from tests.fakes.groq_answers import (
    FILLER,
    Plan,
    completion,
    echo_reply,
    grouped,
    plan_answer,
    usage,
)
from tests.fakes.groq_limits import (
    GROQ_TIERS,
    Dimension,
    ModelStats,
    OtherClient,
    RateLimits,
    Reservation,
    go_duration,
)
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


@dataclass
class _Delivered:
    """How much of an answer went out: its characters, or all of it."""

    chars: int = 0
    complete: bool = False


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
        # Answer pieces (about a token each) sent per SSE event: Groq sends one; some
        # servers batch several, which the CPU benchmark measures too.
        self.pieces_per_event = 1
        self.reply_text: str | None = None
        self.reply_fn: Callable[[dict[str, Any]], str] | None = None
        self.reasoning_text = "The user wrote to me. I should answer briefly and clearly."
        self.force_raw_think = False
        # Generous defaults so headers never look exhausted unless a test asks for it
        # (the developer tier's; its TPD is unpublished, so a large one).
        self.limit_rpm, self.limit_rpd, self.limit_tpm = 1_000, 500_000, 250_000
        self.limit_tpd = 10_000_000
        self.enforce_rpm = self.enforce_rpd = self.enforce_tpm = self.enforce_tpd = False
        self.keep_cap_charged = False
        self.default_completion_cap = 0  # reserved when a request names no cap
        self.minute_s, self.day_s = 60.0, 86_400.0
        self.clock: Callable[[], float] = time.monotonic
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self.count_429 = 0
        self.other_count_429 = 0
        self._others: list[OtherClient] = []
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
        """Stop the other clients, wake stalled answers and stop the server."""
        for other in self._others:
            await other.stop()
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
        ``model="<id>"`` keeps a chat fault for requests to that model only (the others
        are answered as usual). The other profiles take the stream faults only.
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

    # ----- limits: counters and a second client -----

    def stats(self, model: str) -> ModelStats:
        """Server-side counters of ``model``: admitted requests, tokens charged after
        refunds and 429s per dimension, the bot's (``.bot``) and ``burn``'s (``.other``)."""
        return self._limits.stats(model)

    def use_tier(self, tier: str, model: str) -> None:
        """Set the limits to ``GROQ_TIERS[tier][model]`` (a figure not published is left
        as it is); what is enforced is still up to ``enforce_*``."""
        for dimension, value in GROQ_TIERS[tier][model].items():
            if value is not None:
                setattr(self, f"limit_{dimension}", value)

    def allowed(self, model: str, dimension: Dimension, seconds: float) -> float:
        """What the refill lets through in ``seconds`` from an empty bucket: the limit
        (the burst) plus limit / window per second. ``model`` is for symmetry with
        ``stats``: the limits are the same for every model."""
        return self._limits.allowed(dimension, seconds)

    def level(self, model: str, dimension: Dimension) -> float:
        """Use currently charged to one of ``model``'s buckets."""
        return self._limits.level(model, dimension)

    async def burn(self, model: str, tokens: int, requests: int = 1) -> bool:
        """Charge ``requests`` and ``tokens`` as another client of the same key would;
        False, counted in ``other_count_429`` and charging nothing, if they do not fit."""
        return self._limits.burn(model, tokens, requests)

    def start_other_client(
        self,
        model: str,
        tokens: int = 1_000,
        every_s: float = 10.0,
        *,
        requests: int = 1,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> OtherClient:
        """``burn`` now and every ``every_s`` seconds until ``await handle.stop()`` (or
        ``aclose``). Sleeps with ``sleep``, else ``self.sleep``: it must follow ``clock``."""
        sleeper = sleep or self.sleep
        if sleeper is asyncio.sleep and self.clock is not time.monotonic:
            raise ValueError("clock is not time.monotonic: set fake.sleep to its sleep too")

        async def once() -> bool:
            return await self.burn(model, tokens, requests)

        other = OtherClient(once, every_s, sleeper)
        self._others.append(other)
        return other

    def _take_fault(self, endpoint: str, model: str = "") -> _Fault | None:
        for fault in self._faults:
            wanted = fault.params.get("model")
            if fault.params["endpoint"] == endpoint and (wanted is None or wanted == model):
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
        fault = self._take_fault("chat", model)
        if fault is not None and fault.kind in STATUS_FAULTS:
            return self._fault_response(fault, model, self._limits.headers(model))
        invalid = validate(body, self.models, self.decommissioned)
        if invalid is not None:
            return invalid
        reply = self._reply(body)
        plan = plan_answer(body, reply, self.reasoning_text, self.force_raw_think)
        admitted = self._limits.admit(model, body, plan.prompt_tokens)
        if isinstance(admitted, web.Response):
            return admitted
        record["reserved_tokens"] = admitted.tokens
        headers = self._limits.headers(model)  # after the charge, as Groq's are
        delivered = _Delivered()
        try:
            if body.get("stream"):
                return await self._stream(request, body, plan, headers, fault, record, delivered)
            if fault is not None:
                if fault.kind == "drop" and request.transport is not None:
                    request.transport.abort()
                elif fault.kind == "stall":
                    await self._pause(float(fault.params.get("seconds", 1.0)))
                elif fault.kind == "error_event":
                    return error_response(500, "Internal Server Error", "internal_server_error")
            delivered.complete = True  # generated whole, whether or not the client stayed
            return web.json_response(completion(body, plan), headers=headers)
        finally:
            self._settle(admitted, plan, delivered, record)

    def _settle(
        self, admitted: Reservation, plan: Plan, delivered: _Delivered, record: dict[str, Any]
    ) -> None:
        """Charge the answer's real use: the prompt and what was generated of the reply."""
        if delivered.complete:
            completion_tokens = plan.completion_tokens
        else:
            completion_tokens = min(plan.completion_tokens, math.ceil(delivered.chars / 4))
        record["used_tokens"] = plan.prompt_tokens + completion_tokens
        record["settled_at"] = self.clock()
        self._limits.settle(admitted, record["used_tokens"])

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
            # Groq's over-capacity answer as a client logged it (infiniflow/ragflow#9858:
            # GroqException - {"error":{"message":"llama-3.3-70b-versatile is currently
            # over capacity. Please try again and back off exponentially. Visit
            # https://groqstatus.com to see if there is an active incident.",
            # "type":"internal_server_error"}}), with Groq's status for it, 503 "Service
            # Unavailable" (GroqDocs "Errors", console.groq.com/docs/errors).
            message = (
                f"{model} is currently over capacity. Please try again and back off "
                "exponentially. Visit https://groqstatus.com to see if there is an active "
                "incident."
            )
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
        """Sleep with ``self.sleep`` (so on the tests' clock when they share one), but
        wake early when the server closes."""
        if seconds <= 0:
            return
        if self.sleep is asyncio.sleep and seconds < 0.05:
            # A pause between pieces: a plain sleep (a wait_for would start a task per
            # piece, which at hundreds of streams makes the fake the benchmarks' load);
            # a close waits for it, at most this long.
            await asyncio.sleep(seconds)
        elif self.sleep is asyncio.sleep:  # real time: no extra tasks to leave behind
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), seconds)
            return
        nap = asyncio.ensure_future(self.sleep(seconds))
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait({nap, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (nap, closing):
                task.cancel()
            await asyncio.gather(nap, closing, return_exceptions=True)

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        plan: Plan,
        headers: dict[str, str],
        fault: _Fault | None,
        record: dict[str, Any],
        delivered: _Delivered,
    ) -> web.StreamResponse:
        """Stream ``plan``; ``record["first_token_at"]`` notes when the first piece left,
        so benchmarks can subtract the fake's own time to first token, and
        ``record["last_token_at"]`` when the last one did (final-text latency counts
        from there). ``delivered``
        counts what went out, for the refund when the answer ends early."""
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
            pieces = grouped(plan.pieces, self.pieces_per_event)
            for sent, (kind, text) in enumerate([*pieces, ("end", "")]):
                if (
                    sent == after
                    and fault is not None
                    and await self._stream_fault(fault, request, response)
                ):
                    return response
                if kind == "end":
                    break
                await send({kind: text})
                delivered.chars += len(text)
                record.setdefault("first_token_at", self.clock())
                record["last_token_at"] = self.clock()
                await self._pause(self.token_delay_s)
            delivered.complete = True
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
