"""The conversation engine: one ``handle()`` per user message, whatever the platform.

Turns in one conversation run strictly in order (a FIFO lock per conversation);
different conversations run concurrently, bounded by ``MAX_CONCURRENT_REQUESTS``.
The user turn is stored before the API call. The assistant turn is stored from its
first token on (``bot.durable.ReplyRecord``: ``streaming``, checkpointed every
``REPLY_CHECKPOINT_S``) and saved once it ends, with partial text kept and marked when
the stream breaks. A final save that fails is retried once; if it fails again the
reply says it was not saved.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import AsyncIterator, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from bot.channel_commands import ChannelCommandsMixin
from bot.context import (
    CONSERVATIVE_CONTEXT_WINDOW,
    build_messages,
    estimate_tokens,
    history_budget,
    image_parts,
    render_user_text,
    supports_images,
)
from bot.durable import ReplyRecord
from bot.errors import (
    BotError,
    ContextTooLong,
    EmptyStream,
    InputRejected,
    ModelUnavailable,
    QuotaExceeded,
    RequestTooLarge,
    StoreError,
    StreamInterrupted,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamServerError,
)
from bot.fallback import Chains, FallbackReason, Why, candidates
from bot.limits.report import format_duration
from bot.log import conversation_context
from bot.ports import Clock, Completions, QuotaGate, ReplySink, Reservation, Store
from bot.reasoning import ThinkSplitter, reasoning_params
from bot.response_cache import (
    CACHED_NOTE,
    REPLAY_INTERVAL_S,
    CacheStats,
    cache_key,
    cacheable,
    replay_prefixes,
)
from bot.settings import HOSTED_CONCURRENCY, Settings
from bot.text import clean_text
from bot.types import (
    CachedAnswer,
    ChatMessage,
    ChatRequest,
    ConversationKey,
    Finished,
    Incoming,
    ModelInfo,
    Platform,
    PlatformHelp,
    ReasoningDelta,
    TextDelta,
    TurnStatus,
    Usage,
    UsageEntry,
    UserRef,
    WaitReason,
)

if TYPE_CHECKING:  # prometheus-client loads only when the operator endpoint is on
    from bot.metrics import MeteredSink, Metrics

__all__ = ["Engine"]

log = logging.getLogger(__name__)

INTERNAL_ERROR_TEXT = "Something went wrong on our side; the error was logged. Please try again."
# Errors caused by the user's message itself: keep it out of future context.
_INPUT_ERRORS = (InputRejected, ContextTooLong, EmptyStream, RequestTooLarge, QuotaExceeded)
# What the user's own message or share caused: logged at INFO (an account-wide quota
# refusal is the operator's concern: WARNING, like every other failure).
_REFUSALS = (InputRejected, ContextTooLong, RequestTooLarge, QuotaExceeded)
# How servers report a prompt that overflows their context window.
_OVERFLOW = (ContextTooLong, EmptyStream)
# A learned window never goes below this: under it no trimming can help.
_MIN_WINDOW = 256
SHUTDOWN_NOTE = "Cut off: the bot is restarting. Ask again in a moment."
LENGTH_NOTE = "✂️ Cut off at the answer length limit; ask me to continue."
NOT_SAVED_NOTE = (
    "⚠️ This answer could not be saved (the bot's database failed), so it won't be part "
    "of this conversation's history."
)
# Shown while a turn waits for one of the MAX_CONCURRENT_REQUESTS slots.
QUEUED_TEXT = "queued: answering other questions first…"
# Pause before the one retry of a failed final save.
_SAVE_RETRY_DELAY_S = 0.5
# Slack retries an unacked event for about 5 minutes (immediately, after 1 and 5 min).
EVENT_CLAIM_TTL_S = 3600.0

# Quota windows that reset with the UTC day, not within minutes.
_DAY_WINDOWS = ("tpd", "rpd")


@dataclass(slots=True)
class _Answer:
    """What the stream produced so far, and the record storing it as it streams."""

    record: ReplyRecord
    model: str = ""
    text: str = ""
    reasoning: str = ""
    usage: Usage | None = None
    finish_reason: str | None = None
    cache_key: str | None = None  # set when the request may be cached
    cached: bool = False  # replayed from the response cache
    note: str = ""  # which model answered and why, when not the chosen one
    # The reasoning last quoted and its quote: called per delta, ``visible`` quotes the
    # reasoning again only when it grew (never while the answer's text streams).
    _quoted_from: str = ""
    _quoted: str = ""

    def visible(self, show_reasoning: bool) -> str:
        """The text to show: the answer, below the reasoning quoted when shown."""
        if not show_reasoning:
            return self.text
        if self.reasoning is not self._quoted_from:
            self._quoted_from, self._quoted = self.reasoning, quote_lines(self.reasoning)
        quoted = self._quoted
        if not quoted:
            return self.text
        return f"{quoted}\n\n{self.text}" if self.text else quoted


class _LeaveModel(Exception):
    """The quota mirror predicts this model can't start the request within
    QUOTA_MAX_WAIT_S: another model of the chain answers instead (never shown as is)."""

    def __init__(self, reason: FallbackReason) -> None:
        super().__init__(reason.text())
        self.reason = reason


# Every line break str.splitlines knows besides LF.
_OTHER_BREAKS = re.compile("[\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


def quote_lines(text: str) -> str:
    """``text`` stripped, each of its lines prefixed with "> " ("" for blank text)."""
    text = text.strip()
    if not text:
        return ""
    if _OTHER_BREAKS.search(text) is None:  # the usual case: one C-level pass
        return "> " + text.replace("\n", "\n> ")
    return "\n".join(f"> {line}" for line in text.splitlines())


class _Unmetered:
    """The ``Reservation`` of a turn when the engine has no quota: nothing to count."""

    __slots__ = ()

    def note_retry(self) -> None:
        pass

    async def settle(self, usage: Usage | None) -> None:
        pass


_UNMETERED = _Unmetered()


class Engine(ChannelCommandsMixin):
    """Runs conversation turns and commands for every adapter.

    Adapters call ``handle`` with a ``ReplySink`` and the command methods (from
    ``CommandsMixin`` and ``ChannelCommandsMixin``); they never see the store or the
    completions client.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        completions: Completions,
        clock: Clock,
        quota: QuotaGate | None = None,
        pick_default_model: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.store = store
        self.completions = completions
        self.clock = clock
        self.quota = quota
        self._upstream = asyncio.Semaphore(settings.max_concurrent_requests or HOSTED_CONCURRENCY)
        # storage_id -> (lock, number of turns holding or waiting for it)
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._platforms: dict[Platform, PlatformHelp] = {}
        self._pick_default_model = pick_default_model
        # model id -> (window learned from the server refusing a longer request, the
        # window the model list said then).
        self._window_caps: dict[str, tuple[int, int]] = {}
        self.cache_stats = CacheStats()
        self._chains: Chains = settings.fallback_chains()

    # ----- turns -----

    async def handle(self, incoming: Incoming, sink: ReplySink) -> None:
        """Answer one user message through ``sink``. Never raises for expected failures."""
        metered: MeteredSink | None = None
        if self.metrics is not None:
            from bot.metrics import MeteredSink  # loaded with Metrics (METRICS_PORT set)

            sink = metered = MeteredSink(sink, self.metrics, incoming.key.platform, self.clock)
        try:
            await self._handle(incoming, sink)
        finally:
            if metered is not None:
                metered.close()

    async def _handle(self, incoming: Incoming, sink: ReplySink) -> None:
        key, user = incoming.key.storage_id(), incoming.author.storage_id()
        with conversation_context(key, user_id=user):
            user_text = render_user_text(incoming.text, incoming.attachments)
            try:
                self._validate(incoming, user_text)
            except InputRejected as exc:
                log.info("rejected input: %s", exc.user_text)
                await sink.fail(exc.user_text)
                return
            async with self._conversation_lock(incoming.key), AsyncExitStack() as held:
                try:  # other processes on the database run this conversation's turns too
                    await held.enter_async_context(self.store.turn_lease(incoming.key))
                except StoreError as exc:  # the turn's first database call
                    await self._failed(user_text, sink, exc, None)
                    return
                await self._run_turn(incoming, user_text, sink)

    async def claim_event(self, platform: Platform, event_id: str) -> bool:
        """True when this process is the one to handle the platform event ``event_id``
        (its first delivery to any process sharing the database within an hour).

        When the database can't tell, the event is handled: answering a redelivery twice
        is better than not answering at all.
        """
        try:
            return await self.store.claim_event(f"{platform}:{event_id}", ttl_s=EVENT_CLAIM_TTL_S)
        except StoreError as exc:
            log.warning("could not claim event %s: %s; handling it", event_id, exc.detail or exc)
            return True

    def _validate(self, incoming: Incoming, user_text: str) -> None:
        text = incoming.text.strip()
        if not text and not incoming.attachments:
            raise InputRejected("Your message is empty; type something for the bot to answer.")
        limit = self.settings.max_input_chars
        size = len(user_text)
        if size > limit:
            raise InputRejected(
                f"Your message is {size:,} characters long; the limit is {limit:,}. "
                "Please shorten it or split it into several messages."
            )

    @asynccontextmanager
    async def _conversation_lock(self, key: ConversationKey) -> AsyncIterator[None]:
        sid = key.storage_id()
        lock, users = self._locks.get(sid, (asyncio.Lock(), 0))
        self._locks[sid] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[sid]
            if users <= 1:
                del self._locks[sid]
            else:
                self._locks[sid] = (lock, users - 1)

    async def _run_turn(self, incoming: Incoming, user_text: str, sink: ReplySink) -> None:
        interval = self.settings.reply_checkpoint_s
        record = ReplyRecord(self.store, incoming.key, self.clock, interval_s=interval)
        try:
            await self._turn(incoming, user_text, sink, record)
        finally:
            await record.wait()  # no checkpoint outlives its turn, even a cancelled one

    async def _turn(
        self, incoming: Incoming, user_text: str, sink: ReplySink, record: ReplyRecord
    ) -> None:
        user_msg_id: int | None = None
        answer = _Answer(record=record)
        try:
            await sink.start()
            model_id, system_prompt, strict = await self._effective(incoming.author, incoming.key)
            chains = () if strict else self._chains
            model: ModelInfo | ModelUnavailable
            try:
                model = await self._model_info(model_id)
            except ModelUnavailable as exc:
                if self._next_model(chains, model_id, [], None) is None:
                    raise
                model = exc  # answered by the chain's next model, once the turn is stored
            current = self._rich_content(model_id, user_text, incoming)
            user_msg_id = await self.store.add_message(
                incoming.key,
                role="user",
                content=user_text,
                author_id=incoming.author.storage_id(),
                platform_message_id=incoming.message_id,
                tokens=estimate_tokens(user_text),
            )
            await self._answer_any(
                incoming, model_id, model, chains, system_prompt, current, sink, answer
            )
        except StreamInterrupted as exc:
            await self._interrupted(incoming, sink, answer, exc)
            return
        except BotError as exc:
            await record.fail()
            await self._failed(user_text, sink, exc, user_msg_id)
            return
        except Exception:
            log.exception("turn failed unexpectedly")
            await record.fail()
            await sink.fail(INTERNAL_ERROR_TEXT)
            return
        except asyncio.CancelledError:
            # Shutdown cut this reply: it still ends visibly, and what was said is kept.
            await _unless_slow(self._cut_short(incoming, sink, answer))
            raise
        await self._completed(incoming, sink, answer)

    async def _cut_short(self, incoming: Incoming, sink: ReplySink, answer: _Answer) -> None:
        """End a reply shutdown cut: the whole text is checkpointed first and the row left
        ``STREAMING``, so that if this note never reaches the platform (it is failing, or
        time runs out) the next start still ends the message with its restart note."""
        log.warning("reply cut short by shutdown after %d chars", len(answer.text))
        text = answer.text.strip()
        if text:
            try:
                await answer.record.save(
                    clean_text(text),
                    tokens=estimate_tokens(text),
                    status=TurnStatus.STREAMING,
                    ref=sink.reply_ref,
                )
            except BotError as exc:
                log.error("could not checkpoint the reply cut short: %s", exc.detail or exc)
        shown = answer.visible(self.settings.show_reasoning).strip()
        await sink.finish(f"{shown}\n\n⚠️ {SHUTDOWN_NOTE}".strip(), TurnStatus.INTERRUPTED)

    async def _answer_any(
        self,
        incoming: Incoming,
        chosen: str,
        first: ModelInfo | ModelUnavailable,
        chains: Chains,
        system_prompt: str,
        current: ChatMessage | None,
        sink: ReplySink,
        answer: _Answer,
    ) -> None:
        """Answer with ``chosen`` (``first``: its catalog entry, or why it has none), or,
        when it can't answer now, with the next model of its ``MODEL_FALLBACKS`` chain
        that can; each model tried once, each with its own window and output cap."""
        left: list[FallbackReason] = []
        model_id, found = chosen, first
        while True:
            tried = [r.model for r in left]
            following = self._next_model(chains, chosen, [*tried, model_id], current)
            # The chain's last model is left early too: the refusal then names them all.
            can_leave = following is not None or bool(left)
            try:
                if isinstance(found, ModelUnavailable):
                    raise found
                answer.model = found.id
                if left:  # said also when this answer breaks off midway
                    reasons = "; ".join(r.text() for r in left)
                    answer.note = f"answered by {found.id}: {reasons}"
                await self._answer(
                    incoming,
                    found,
                    system_prompt,
                    current,
                    sink,
                    answer,
                    can_leave=can_leave,
                )
                break
            except (_LeaveModel, UpstreamError) as exc:
                reason = _fallback_reason(model_id, exc)
                if reason is None or not can_leave:
                    raise  # nothing to try instead: today's message says it best
                if isinstance(exc, UpstreamRateLimited) and self.metrics is not None:
                    self.metrics.upstream_rate_limited()
                if following is None:
                    raise _none_could_answer([*left, reason]) from exc
                left.append(reason)
            log.warning("fallback %s -> %s: %s", model_id, following, reason.text())
            if self.metrics is not None:
                self.metrics.fallback(model_id, following, reason.why.value)
            await sink.status(f"{reason.text()}; asking {following}…")
            model_id = following
            try:
                found = await self._model_info(model_id)
            except ModelUnavailable as exc:
                found = exc

    def _next_model(
        self, chains: Chains, chosen: str, tried: list[str], current: ChatMessage | None
    ) -> str | None:
        """The next model of ``chosen``'s chain not ``tried`` (one that reads images when
        the message has some), or None."""
        for model in candidates(chains, chosen, tried):
            if current is None or supports_images(model):
                return model
        return None

    async def _answer(
        self,
        incoming: Incoming,
        model: ModelInfo,
        system_prompt: str,
        current: ChatMessage | None,
        sink: ReplySink,
        answer: _Answer,
        *,
        can_leave: bool = False,
    ) -> None:
        """Stream the answer; when the server says the request overflows its window, lower
        the model's window, trim the history to it and try once more. ``can_leave``: a
        fallback model is there, so a model that can't start now is left at once (quota
        predicted too long, 503) rather than waited or retried for."""
        request = await self._request(incoming.key, model, system_prompt, current)
        prompt = _request_tokens(request)
        # An empty streamed answer means "too long" only when the request could be.
        large = prompt + (request.max_tokens or 0) >= model.context_window // 2
        if await self._from_cache(request, sink, answer):
            return
        try:
            await self._stream(
                incoming,
                request,
                prompt,
                sink,
                answer,
                empty_is_overflow=large,
                can_leave=can_leave,
            )
            return
        except _OVERFLOW as exc:
            smaller = self._smaller_window(model, request, prompt, exc)
            if smaller is None:
                raise
            log.info(
                "request of ~%d tokens overflowed %s (%s); retrying with a %d-token window",
                prompt,
                model.id,
                type(exc).__name__,
                smaller.context_window,
            )
            if isinstance(exc, ContextTooLong):  # the server said so: remember it
                self._cap_window(model, smaller.context_window)
        await sink.status("the conversation is too long for the model; retrying with less history…")
        request = await self._request(incoming.key, smaller, system_prompt, current)
        if await self._from_cache(request, sink, answer):
            return
        prompt = _request_tokens(request)
        await self._stream(incoming, request, prompt, sink, answer, can_leave=can_leave)
        # It fitted once trimmed: whatever the server's way of saying so, that was it.
        self._cap_window(model, smaller.context_window)

    def _smaller_window(
        self,
        model: ModelInfo,
        request: ChatRequest,
        prompt: int,
        error: ContextTooLong | EmptyStream,
    ) -> ModelInfo | None:
        """The model with a window the failed request (``prompt`` estimated tokens) would
        not have fitted, in our own estimates, or None when that leaves no room to answer."""
        size = prompt + (request.max_tokens or 0)
        window = size * 3 // 4
        if isinstance(error, ContextTooLong) and error.window:
            if error.prompt_tokens:  # the server counted the prompt: scale ours to it
                window = int(error.window * prompt / error.prompt_tokens * 0.95)
            elif size >= error.window:  # we believed in a larger window than it has
                window = error.window
        window = min(window, model.context_window * 3 // 4)
        if window < _MIN_WINDOW:
            return None
        return replace(model, context_window=window, context_source="learned")

    def _cap_window(self, model: ModelInfo, window: int) -> None:
        """Remember a smaller window for ``model`` until the server's own figure changes."""
        old = self._window_caps.get(model.id)
        if old is None:
            self._window_caps[model.id] = (window, model.context_window)
        else:
            self._window_caps[model.id] = (min(window, old[0]), old[1])

    def _with_learned_window(self, model: ModelInfo) -> ModelInfo:
        learned = self._window_caps.get(model.id)
        if learned is None:
            return model
        cap, base = learned
        if base != model.context_window:  # e.g. llama.cpp restarted with another n_ctx
            del self._window_caps[model.id]
            return model
        if cap >= model.context_window:
            return model
        return replace(model, context_window=cap, context_source="learned")

    def _rich_content(self, model: str, text: str, incoming: Incoming) -> ChatMessage | None:
        images = [a for a in incoming.attachments if a.mime_type.startswith("image/")]
        if not images:
            return None
        if not supports_images(model):
            raise InputRejected(
                f"The model `{model}` can't read images; pick a vision model with /model "
                "or send the text instead."
            )
        return ChatMessage(role="user", content=image_parts(text, incoming.attachments))

    async def _request(
        self,
        key: ConversationKey,
        model: ModelInfo,
        system_prompt: str,
        current: ChatMessage | None,
    ) -> ChatRequest:
        s = self.settings
        max_output = s.max_output_tokens
        if model.max_completion_tokens:
            max_output = min(max_output, model.max_completion_tokens)
        # A small local window must leave room for the conversation, not only the answer.
        max_output = max(1, min(max_output, model.context_window // 2))
        budget = history_budget(
            model,
            max_output_tokens=max_output,
            system_prompt=system_prompt,
            cap=s.context_token_budget,
        )
        history = await self.store.window(key, token_budget=budget)
        return ChatRequest(
            model=model.id,
            messages=build_messages(system_prompt, history, current=current),
            temperature=s.temperature,
            top_p=s.top_p,
            max_tokens=max_output,
            frequency_penalty=s.frequency_penalty,
            presence_penalty=s.presence_penalty,
            extra=reasoning_params(model.id, show=s.show_reasoning, effort=s.reasoning_effort),
        )

    async def _stream(
        self,
        incoming: Incoming,
        request: ChatRequest,
        prompt_tokens: int,
        sink: ReplySink,
        answer: _Answer,
        *,
        empty_is_overflow: bool = False,
        can_leave: bool = False,
    ) -> None:
        answer.usage = answer.finish_reason = None  # a retry starts afresh
        reservation = await self._admit(
            incoming.author, request, prompt_tokens, sink, can_leave=can_leave
        )
        show = self.settings.show_reasoning
        splitter = ThinkSplitter()
        metrics = self.metrics
        if metrics is not None:
            metrics.model_request(request.model)

        async def on_retry(error: UpstreamError, attempt: int, delay: float) -> None:
            if can_leave and error.status == 503:
                raise error  # over capacity: another model answers now, not after backoff
            # Not a failure (yet): the client logs the retry at INFO; the turn's end logs
            # the one line of a failure the user sees.
            reservation.note_retry()
            if metrics is not None:
                metrics.upstream_retry(rate_limited=isinstance(error, UpstreamRateLimited))
                metrics.model_request(request.model)
            await sink.status(f"{_short_reason(error)}; retrying in {delay:.0f} s…")

        try:
            if self._upstream.locked():  # every slot is busy: say so before waiting
                await sink.status(QUEUED_TEXT)
            async with self._upstream:
                async for event in self.completions.stream(
                    request, on_retry=on_retry, empty_is_overflow=empty_is_overflow
                ):
                    if isinstance(event, TextDelta):
                        text, thought = splitter.feed(event.text)
                        answer.text += text
                        answer.reasoning += thought
                    elif isinstance(event, ReasoningDelta):
                        answer.reasoning += event.text
                    elif isinstance(event, Finished):
                        answer.usage = event.usage
                        answer.finish_reason = event.finish_reason
                        continue
                    if answer.text or (show and answer.reasoning):
                        await sink.update(answer.visible(show))
                        answer.record.note(answer.text, sink.reply_ref)
                text, thought = splitter.flush()
                answer.text += text
                answer.reasoning += thought
        except StreamInterrupted as exc:
            answer.text = answer.text or exc.partial_text
            raise
        except UpstreamError:
            # Failed before the first token (a refusal, 5xx, 429, unreachable): no tokens
            # were used, so the user's token budget is not charged the reservation.
            answer.usage = Usage(0, 0, estimated=True)
            raise
        finally:
            if answer.usage is None and (answer.text or answer.reasoning):
                # The server reports no usage (llama.cpp, Ollama, broken streams): estimate
                # it, so /usage, the ledger and the quota still count this turn.
                answer.usage = Usage(
                    prompt_tokens,
                    estimate_tokens(answer.text + answer.reasoning),
                    estimated=True,
                )
            if metrics is not None and answer.usage is not None:
                usage = answer.usage
                metrics.tokens(request.model, usage.prompt_tokens, usage.completion_tokens)
            await reservation.settle(answer.usage)

    async def _admit(
        self,
        user: UserRef,
        request: ChatRequest,
        prompt_tokens: int,
        sink: ReplySink,
        *,
        can_leave: bool = False,
    ) -> Reservation:
        """Reserve the request with the quota; with ``can_leave``, raise ``_LeaveModel``
        instead of waiting when the account could not start it within QUOTA_MAX_WAIT_S."""
        quota = self.quota
        if quota is None:
            return _UNMETERED

        began: float | None = None  # when the quota first made this request wait

        async def on_wait(seconds: float, reason: WaitReason) -> None:
            nonlocal began
            if began is None:
                began = self.clock.now()
            await sink.status(_wait_text(seconds, reason))

        estimate = prompt_tokens + (request.max_tokens or 0)
        if can_leave:  # decided before any waiting
            wait, limit = quota.predict_wait(request.model, estimate)
            if wait > quota.max_wait_s():
                raise _LeaveModel(_quota_reason(request.model, wait, limit))
        try:
            return await quota.admit(
                user, request.model, estimate, user_tokens=prompt_tokens, on_wait=on_wait
            )
        except QuotaExceeded as exc:
            if not can_leave or exc.scope != "account":
                raise  # a user's own limit holds whichever model they ask
            wait, limit = quota.predict_wait(request.model, estimate)
            reason = _quota_reason(request.model, max(wait, exc.retry_in_s), limit)
            raise _LeaveModel(reason) from exc
        finally:
            # The wait as it was, not as announced: one per request that waited, admitted
            # or refused in the end.
            if began is not None and self.metrics is not None:
                self.metrics.quota_wait(self.clock.now() - began)

    async def _completed(self, incoming: Incoming, sink: ReplySink, answer: _Answer) -> None:
        text = answer.text.strip()
        if not text:
            note = "The model returned an empty answer; try rephrasing your message."
            if answer.finish_reason == "length":
                note = (
                    "The answer length limit was used up before the answer began (the model "
                    "spent it thinking): ask for less, or raise MAX_OUTPUT_TOKENS."
                )
            log.warning("the model returned no text (finish_reason %s)", answer.finish_reason)
            await self._save(incoming, sink, answer, note, TurnStatus.FAILED)
            await sink.fail(note)
            return
        saved = await self._save(incoming, sink, answer, text, TurnStatus.COMPLETE)
        shown = answer.visible(self.settings.show_reasoning).strip()
        if answer.finish_reason == "length":
            shown = f"{shown}\n\n{LENGTH_NOTE}"
        if answer.note:
            shown = f"{shown}\n\n↪️ {answer.note}"
        if answer.cached:
            shown = f"{shown}\n\n{CACHED_NOTE}"
        if not saved:
            shown = f"{shown}\n\n{NOT_SAVED_NOTE}"
        await sink.finish(shown, TurnStatus.COMPLETE)
        # After the answer is shown: storing it never delays or costs the user anything.
        await self._cache_store(answer)

    async def _interrupted(
        self, incoming: Incoming, sink: ReplySink, answer: _Answer, exc: StreamInterrupted
    ) -> None:
        log.warning("stream interrupted after %d chars: %s", len(answer.text), exc.detail)
        text = answer.text.strip()
        saved = await self._save(incoming, sink, answer, text, TurnStatus.INTERRUPTED)
        shown = answer.visible(self.settings.show_reasoning).strip()
        shown = f"{shown}\n\n⚠️ {exc.user_text}"
        if answer.note:
            shown = f"{shown}\n\n↪️ {answer.note}"
        if not saved and text:
            shown = f"{shown}\n\n{NOT_SAVED_NOTE}"
        await sink.finish(shown, TurnStatus.INTERRUPTED)

    async def _failed(
        self, user_text: str, sink: ReplySink, exc: BotError, user_msg_id: int | None
    ) -> None:
        if isinstance(exc, QuotaExceeded) and not exc.notify:
            log.info("quota refusal (%s), user already notified this window", exc.scope)
        elif isinstance(exc, _REFUSALS) and not _account_wide(exc):
            log.info("turn refused: %s %s", type(exc).__name__, exc.detail or exc.user_text)
        else:
            log.warning("turn failed: %s %s", type(exc).__name__, exc.detail or exc.user_text)
        if self.metrics is not None and isinstance(exc, QuotaExceeded):
            from bot.metrics import MeteredSink

            if isinstance(sink, MeteredSink):
                sink.refused = True
        if self.metrics is not None and isinstance(exc, UpstreamRateLimited):
            self.metrics.upstream_rate_limited()  # the last 429: earlier ones were retried
        try:
            if user_msg_id is not None and isinstance(exc, _INPUT_ERRORS):
                await self.store.update_message(
                    user_msg_id,
                    content=user_text,
                    tokens=0,
                    status=TurnStatus.FAILED,
                )
        except BotError as store_exc:
            log.error("could not mark failed turn: %s", store_exc.detail)
        if isinstance(exc, QuotaExceeded) and not exc.notify:
            # Told in full once per window; every later message still gets an answer.
            await sink.fail(_still_limited(exc))
        else:
            await sink.fail(exc.user_text)

    async def _save(
        self, incoming: Incoming, sink: ReplySink, answer: _Answer, text: str, status: TurnStatus
    ) -> bool:
        """Store the assistant turn's final state, retrying once; then its usage. False
        when the turn could not be stored (logged)."""
        usage = answer.usage
        tokens = usage.completion_tokens if usage else estimate_tokens(text)
        saved = True
        try:
            await answer.record.save(
                clean_text(text), tokens=tokens, status=status, ref=sink.reply_ref
            )
        except BotError as exc:
            log.info("storing the reply failed, retrying once: %s", exc.detail or exc)
            await self.clock.sleep(_SAVE_RETRY_DELAY_S)
            try:
                await answer.record.save(
                    clean_text(text), tokens=tokens, status=status, ref=sink.reply_ref
                )
            except BotError as again:
                log.error("storing the reply failed again: %s", again.detail or again)
                saved = False
        if answer.cached:  # a ledger row, marked, with no tokens: nothing was used
            await self._record_usage(incoming.author, answer.model, Usage(), cached=True)
        elif usage is not None and usage.total_tokens > 0:
            await self._record_usage(incoming.author, answer.model, usage)
        return saved

    async def _record_usage(
        self, user: UserRef, model: str, usage: Usage, *, cached: bool = False
    ) -> None:
        entry = UsageEntry(
            user=user,
            model=model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            at=self.clock.time(),
            estimated=usage.estimated,
            cached=cached,
        )
        try:
            await self.store.record_usage(entry)
        except BotError as exc:  # the quota counted it; only /usage and the export miss it
            log.error("could not record usage: %s", exc.detail or exc)

    # ----- response cache -----

    async def _from_cache(self, request: ChatRequest, sink: ReplySink, answer: _Answer) -> bool:
        """Answer from the response cache when ``request`` may be cached and is there:
        replayed through ``sink``, with no quota and no request to the model. A cache
        that fails to answer is a miss (logged): the model answers instead."""
        if not cacheable(self.settings.cache_mode, request):
            answer.cache_key = None
            return False
        key = answer.cache_key = cache_key(self.settings.api_base_url, request)
        fresh_since = self.clock.time() - self.settings.cache_ttl_s
        try:
            hit = await self.store.cache_get(key, fresh_since=fresh_since)
        except Exception as exc:  # whatever broke, the model still answers
            self.cache_stats.failures += 1
            log.warning("response cache read failed; asking the model: %s", _cause(exc))
            return False
        if hit is None:
            self.cache_stats.misses += 1
        else:
            self.cache_stats.hits += 1
        if self.metrics is not None:
            self.metrics.cache_lookup(hit=hit is not None)
        if hit is None:
            return False
        log.info("answered from the response cache (%s)", key[:12])
        await self._replay(hit, sink, answer)
        return True

    async def _replay(self, hit: CachedAnswer, sink: ReplySink, answer: _Answer) -> None:
        """Show a cached answer growing in a few updates, as a streamed one does."""
        answer.text, answer.reasoning, answer.cached = hit.text, hit.reasoning, True
        # The original counts: the turn weighs in the history what it weighed then.
        answer.usage = Usage(hit.prompt_tokens, hit.completion_tokens, hit.estimated)
        answer.finish_reason = "stop"
        for prefix in replay_prefixes(answer.visible(self.settings.show_reasoning)):
            await sink.update(prefix)
            answer.record.note(answer.text, sink.reply_ref)
            await self.clock.sleep(REPLAY_INTERVAL_S)

    async def _cache_store(self, answer: _Answer) -> None:
        """Keep a complete, cacheable answer. Only one that ended of itself ("stop") is
        kept: never one cut at the length limit, interrupted or failed."""
        if answer.cached or answer.cache_key is None or answer.finish_reason != "stop":
            return
        usage = answer.usage or Usage(estimated=True)
        entry = CachedAnswer(
            model=answer.model,
            text=clean_text(answer.text.strip()),
            reasoning=clean_text(answer.reasoning),
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            created_at=self.clock.time(),
            estimated=usage.estimated,
        )
        s = self.settings
        try:
            await self.store.cache_put(
                answer.cache_key,
                entry,
                max_entries=s.cache_max_entries,
                stale_before=entry.created_at - s.cache_ttl_s,
            )
        except Exception as exc:  # the user has the answer; only its reuse is lost
            self.cache_stats.failures += 1
            log.warning("response cache write failed; answer not cached: %s", _cause(exc))
            return
        self.cache_stats.stores += 1
        if self.metrics is not None:
            self.metrics.cache_stored()

    # ----- models -----

    async def _effective(self, user: UserRef, key: ConversationKey | None) -> tuple[str, str, bool]:
        """The model, the system prompt and whether the model choice is strict."""
        prefs = await self.effective_prefs(user, key)
        model = prefs.model or await self.default_model()
        system = prefs.system_prompt if prefs.system_prompt is not None else None
        return model, system or self.settings.system_prompt, prefs.strict and bool(prefs.model)

    async def _model_info(self, model_id: str) -> ModelInfo:
        """The model's catalog entry; unknown models fail with a clear message."""
        try:
            models = await self.completions.models()
        except UpstreamError as exc:
            if exc.status in (401, 403):
                raise
            # The list being unavailable must not block chatting: assume defaults.
            log.warning("model list unavailable (%s); using defaults for %s", exc, model_id)
            return self._with_learned_window(_unlisted(model_id))
        for info in models:
            if info.id == model_id:
                if not info.active:
                    raise ModelUnavailable(
                        f"The model `{model_id}` is no longer available; pick another with /model.",
                        retired=True,
                    )
                return self._with_learned_window(info)
        if not models:
            return self._with_learned_window(_unlisted(model_id))
        raise ModelUnavailable(
            f"The model `{model_id}` is not offered by the API; pick one with /model "
            f"(for example `{models[0].id}`)."
        )


async def _unless_slow(work: Coroutine[Any, Any, None], within_s: float = 2.0) -> None:
    """Run ``work`` to its end even though the caller is being cancelled, for at most
    ``within_s`` (the shutdown deadline is short); a failure is logged, not raised."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.wait_for(asyncio.shield(task), within_s)
    except (TimeoutError, asyncio.CancelledError):
        task.cancel()
    except Exception:
        log.exception("finishing a reply cut short failed")


def _account_wide(exc: BotError) -> bool:
    """A quota refusal for the whole bot, not for this user's share."""
    return isinstance(exc, QuotaExceeded) and exc.scope != "user"


def _wait_text(seconds: float, reason: WaitReason) -> str:
    """The status line of a message waiting to be sent."""
    about = format_duration(max(1.0, seconds))
    if reason is WaitReason.YOUR_TURN:
        return "queued behind your other question…"
    if reason is WaitReason.YOUR_LIMIT:
        return f"queued: your limit resets in {about}…"
    return f"waiting for capacity, about {about}…"


def _still_limited(exc: QuotaExceeded) -> str:
    """The short reply to a message refused again within a window already explained."""
    whose = "your" if exc.scope == "user" else "the bot's"
    if exc.retry_in_s <= 0:
        return f"Still at {whose} limit; please wait for the requests in progress to finish."
    return f"Still at {whose} limit; try again in {format_duration(exc.retry_in_s)}."


def _unlisted(model_id: str) -> ModelInfo:
    return ModelInfo(
        id=model_id, context_window=CONSERVATIVE_CONTEXT_WINDOW, context_source="default"
    )


def _request_tokens(request: ChatRequest) -> int:
    """Estimated prompt tokens of a request."""
    return sum(
        estimate_tokens(m.content if isinstance(m.content, str) else str(m.content))
        for m in request.messages
    )


def _cause(exc: Exception) -> str:
    """A store failure for the log: ``StoreError``'s operator detail, else its type."""
    if isinstance(exc, BotError):
        return exc.detail or exc.user_text
    return f"{type(exc).__name__}: {exc}"


def _quota_reason(model: str, wait: float, limit: str) -> FallbackReason:
    """Why the quota mirror sends a request on ``model`` elsewhere (``limit``: what
    ``QuotaGate.predict_wait`` said binds)."""
    if limit in _DAY_WINDOWS:
        return FallbackReason(model, Why.DAY_QUOTA, wait, limit)
    if limit == "size":
        return FallbackReason(model, Why.TOO_LARGE)
    if limit == "pause":
        return FallbackReason(model, Why.RATE_LIMITED, wait)
    return FallbackReason(model, Why.MINUTE_QUOTA, wait, limit)


def _fallback_reason(model: str, error: Exception) -> FallbackReason | None:
    """Why another model should answer after ``error`` on ``model``; None when another
    model would not help (the user's own limit, a bad request, a broken network)."""
    if isinstance(error, _LeaveModel):
        return error.reason
    if isinstance(error, UpstreamRateLimited):
        wait = error.retry_after_s or 0.0
        if error.limit in _DAY_WINDOWS:
            return FallbackReason(model, Why.DAY_QUOTA, wait, error.limit)
        return FallbackReason(model, Why.RATE_LIMITED, wait, error.limit or "")
    if isinstance(error, ModelUnavailable):
        return FallbackReason(model, Why.RETIRED if error.retired else Why.UNAVAILABLE)
    if isinstance(error, UpstreamServerError) and error.status == 503:
        return FallbackReason(model, Why.OVER_CAPACITY)
    return None


def _none_could_answer(reasons: list[FallbackReason]) -> BotError:
    """The refusal when every model of the chain was tried: each one's reason, and when
    to come back if only limits stood in the way."""
    text = "No model can answer right now: " + "; ".join(r.text() for r in reasons) + "."
    detail = "fallback chain exhausted: " + ", ".join(f"{r.model} {r.why}" for r in reasons)
    if all(r.limit_like for r in reasons):
        soonest = min((r.seconds for r in reasons if 0 < r.seconds < math.inf), default=0.0)
        if soonest > 0:
            text += f" Try again in about {format_duration(soonest)}."
        return QuotaExceeded(text, scope="account", retry_in_s=soonest, detail=detail)
    return UpstreamServerError(text + " Please try again later.", detail=detail)


def _short_reason(error: UpstreamError) -> str:
    names = {
        429: "the model API is busy (rate limit)",
        500: "the model API had an error",
        502: "the model API had an error",
        503: "the model API is overloaded",
    }
    if error.status in names:
        return names[error.status]
    return "the model API did not answer"
