"""Engine operations behind /model, /models, /reset, /system, /usage and /help.

Every adapter exposes the same set by calling these; the terminal also parses them
from typed text with ``run_text_command``.
"""

from __future__ import annotations

import difflib
import logging
from datetime import UTC, datetime

from bot.errors import BotError, UpstreamError
from bot.fallback import Chains, candidates
from bot.ports import Clock, Completions, QuotaGate, Store
from bot.response_cache import CacheStats
from bot.settings import Settings
from bot.text import clean_text
from bot.types import (
    CommandReply,
    ConversationKey,
    Incoming,
    ModelInfo,
    Platform,
    PlatformHelp,
    Prefs,
    UsageSummary,
    UserRef,
)

__all__ = ["CommandsMixin", "clean_persona", "is_chat_model", "persona_problem", "window_text"]

log = logging.getLogger(__name__)

MAX_SYSTEM_PROMPT_CHARS = 4000


class CommandsMixin:
    """Command operations; mixed into ``Engine``, which provides the attributes below."""

    settings: Settings
    store: Store
    completions: Completions
    clock: Clock
    quota: QuotaGate | None
    _platforms: dict[Platform, PlatformHelp]
    _pick_default_model: bool
    cache_stats: CacheStats
    _chains: Chains

    def is_admin(self, user: UserRef) -> bool:
        """Whether the user is listed in ADMIN_IDS."""
        return self.settings.is_admin(str(user.platform), user.user_id)

    async def has_conversation(self, key: ConversationKey) -> bool:
        """Whether this conversation has any history (e.g. a thread the bot answers in)."""
        return bool(await self.store.window(key, token_budget=10**9, max_messages=1))

    async def list_models(self, query: str = "") -> list[ModelInfo]:
        """Active chat models from the live list whose id contains ``query``
        (case-insensitive). Speech, TTS, guard and embedding models are left out, except
        the default model, which is always listed."""
        models = await self.completions.models()
        needle = query.strip().lower()
        default = self.settings.default_model
        active = [m for m in models if m.active]
        chat = [m for m in active if is_chat_model(m.id) or m.id == default] or active
        return [self._with_learned_window(m) for m in chat if needle in m.id.lower()]

    def _with_learned_window(self, model: ModelInfo) -> ModelInfo:
        """``model`` with the window turns actually use (the engine lowers it after an
        overflow)."""
        return model

    async def current_model(self, user: UserRef, key: ConversationKey | None) -> str:
        """The model the next turn of this user in this conversation will use."""
        prefs = await self.effective_prefs(user, key)
        return prefs.model or await self.default_model()

    async def effective_prefs(self, user: UserRef, key: ConversationKey | None) -> Prefs:
        """Model and persona by precedence: the conversation's (``/system``, ``/model``
        scoped to it), else the user's own, else its channel's settings; None left for
        the global default (DEFAULT_MODEL, SYSTEM_PROMPT)."""
        prefs = await self.store.prefs(user, key)  # the conversation's over the user's
        channel = key.channel_ref if key is not None else None
        if channel is None or (prefs.model is not None and prefs.system_prompt is not None):
            return prefs
        settings = await self.store.channel_settings(channel)
        return Prefs(
            model=prefs.model if prefs.model is not None else settings.model,
            system_prompt=(
                prefs.system_prompt if prefs.system_prompt is not None else settings.system_prompt
            ),
            strict=prefs.strict and prefs.model is not None,  # a channel's model is never strict
        )

    async def default_model(self) -> str:
        """DEFAULT_MODEL; when left blank on a local server (llama.cpp, vLLM, Ollama), the
        first chat model it lists now, so a swapped model file needs no restart."""
        configured = self.settings.default_model
        if not self._pick_default_model:
            return configured
        try:
            ids = [m.id for m in await self.list_models()]
        except UpstreamError:
            return configured
        return configured if configured in ids or not ids else ids[0]

    async def set_model(
        self,
        user: UserRef,
        model: str,
        *,
        key: ConversationKey | None = None,
        strict: bool = False,
    ) -> CommandReply:
        """Choose a model for the user, or for one conversation when ``key`` is given;
        ``strict``: only that model answers (no MODEL_FALLBACKS when it is busy)."""
        model = model.strip()
        if not model:
            return await self.models_text(user, key)
        problem = await self.model_problem(model)
        if problem is not None:
            return problem
        await self.store.set_model(key if key is not None else user, model, strict=strict)
        where = "this conversation" if key is not None else "you"
        note = self._fallback_note(user.platform, model, strict)
        return CommandReply(f"Model set to `{model}` for {where}.{note}")

    async def model_problem(self, model: str) -> CommandReply | None:
        """Why ``model`` can't be chosen (not in the live list, or the list can't be read);
        None when it can. An API that lists no models accepts any id."""
        try:
            available = await self.list_models()
        except UpstreamError as exc:
            return CommandReply(f"Couldn't check the model list: {exc.user_text}")
        ids = [m.id for m in available]
        if available and model not in ids:
            close = difflib.get_close_matches(model, ids, n=3, cutoff=0.4)
            hint = f" Did you mean {', '.join(f'`{c}`' for c in close)}?" if close else ""
            return CommandReply(f"`{model}` is not an available model.{hint} See /models.")
        return None

    def _fallback_note(self, platform: Platform, model: str, strict: bool) -> str:
        """What happens when ``model`` is busy, when MODEL_FALLBACKS could answer for it."""
        chains = self._chains
        if not chains:
            return ""
        if strict:
            return " Strict: when it is busy you get its wait or limit, never another model."
        following = next(candidates(chains, model, ()), None)
        if following is None:
            return ""
        # Some platforms take ``strict`` as a command option, others as a word after the id.
        p = self._platform_help(platform).command_prefix
        return (
            f" When it is busy, `{following}` may answer instead; choose it with `strict` "
            f"(`{p}model {model} strict`, or the option) to never switch."
        )

    async def models_text(self, user: UserRef, key: ConversationKey | None) -> CommandReply:
        """The live model list with the current choice marked."""
        try:
            models = await self.list_models()
        except UpstreamError as exc:
            return CommandReply(exc.user_text)
        current = await self.current_model(user, key)
        if not models:
            return CommandReply(f"The API lists no models. Current model: `{current}`.")
        default = await self.default_model()
        lines = [
            f"{'▶' if m.id == current else '•'} `{m.id}` ({window_text(m)})"
            + (" · default" if m.id == default else "")
            for m in models
        ]
        return CommandReply(f"Available models (▶ = yours: `{current}`):\n" + "\n".join(lines))

    async def reset(self, key: ConversationKey, user: UserRef) -> CommandReply:
        """Forget the conversation's history and its own settings."""
        removed = await self.store.reset(key)
        log.info(
            "conversation %s reset by %s (%d messages)", key.storage_id(), user.user_id, removed
        )
        return CommandReply(f"Conversation reset: forgot {removed} message(s).")

    async def set_system(
        self, user: UserRef, prompt: str | None, *, key: ConversationKey | None = None
    ) -> CommandReply:
        """Set (or clear, with None or an empty string) the persona / system prompt."""
        prompt = clean_persona(prompt)
        if prompt is not None and (problem := persona_problem(prompt)) is not None:
            return problem
        await self.store.set_system_prompt(key if key is not None else user, prompt)
        where = "this conversation" if key is not None else "you"
        if prompt is None:
            return CommandReply(f"Persona cleared for {where}; the default applies.")
        return CommandReply(f"Persona set for {where}.")

    async def usage(self, user: UserRef) -> CommandReply:
        """The user's consumption and remaining quota (admins also see the account and
        the response cache's hit rate)."""
        now = self.clock.time()
        admin = self.is_admin(user)
        if self.quota is not None:
            current = await self.current_model(user, None)
            text = await self.quota.report(user, admin=admin, current_model=current)
            month = await self.store.usage_since(user, now - 30 * 86400)
        else:
            day_start = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0)
            today = await self.store.usage_since(user, day_start.timestamp())
            month = await self.store.usage_since(user, now - 30 * 86400)
            text = (
                f"Today: {today.requests} request(s), {today.total_tokens:,} tokens.\n"
                f"Last 30 days: {month.requests} request(s), {month.total_tokens:,} tokens."
            )
        text += _estimated_note(month) + _cached_note(month)
        if admin:
            text += "\n" + await self._bot_today(now) + "\n" + await self._cache_report()
        return CommandReply(text)

    async def _bot_today(self, now: float) -> str:
        """The whole bot's replies and tokens per model since 00:00 UTC, as a table."""
        midnight = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0)
        try:
            totals = await self.store.usage_by_model(midnight.timestamp())
        except BotError as exc:
            log.warning("could not total today's usage: %s", exc.detail or exc)
            return "The whole bot today: unavailable (the database did not answer)."
        if not totals:
            return "The whole bot today (since 00:00 UTC): no replies yet."
        return "The whole bot today (since 00:00 UTC):\n" + usage_table(totals)

    async def _cache_report(self) -> str:
        try:
            entries: int | None = await self.store.cache_size()
        except BotError as exc:
            log.warning("could not count the response cache: %s", exc.detail or exc)
            entries = None
        return self.cache_stats.report(entries)

    async def cache(self, user: UserRef, arg: str) -> CommandReply:
        """``/cache clear`` empties the response cache; ``/cache`` shows its hit rate.
        Admins only (``/reset`` never touches it: an entry is nobody's history)."""
        p = self._platform_help(user.platform).command_prefix
        if not self.is_admin(user):
            return CommandReply("Only the bot's admins (ADMIN_IDS) can manage the response cache.")
        action = arg.strip().lower()
        if action == "clear":
            removed = await self.store.cache_clear()
            log.info("response cache cleared by %s (%d entries)", user.user_id, removed)
            return CommandReply(
                f"Response cache cleared: {removed} entr{'y' if removed == 1 else 'ies'} removed."
            )
        if action:
            return CommandReply(f"Usage: `{p}cache clear` (or `{p}cache` for its hit rate).")
        return CommandReply(await self._cache_report())

    def describe_platform(self, platform: Platform, help: PlatformHelp) -> None:
        """Record how users reach the bot on ``platform`` (adapters call this once)."""
        self._platforms[platform] = help

    def _platform_help(self, platform: Platform) -> PlatformHelp:
        return self._platforms.get(platform, _GENERIC_HELP)

    def help(self, platform: Platform) -> CommandReply:
        """What the bot does and its commands, named as this platform spells them."""
        about = self._platform_help(platform)
        p = about.command_prefix
        # Only where MODEL_FALLBACKS makes the choice matter.
        strict = f" (`{p}model <id> strict`: never another model)" if self._chains else ""
        return CommandReply(
            f"{about.how_to}\n"
            f"`{p}model <id>`: choose your model{strict} · `{p}models`: list models · "
            f"`{p}reset`: forget this conversation · `{p}system <text>`: set a persona "
            f"(`{p}system clear` removes it) · `{p}usage`: your usage and limits · "
            f"`{p}help`: this text."
        )

    async def run_command(
        self, name: str, arg: str, *, user: UserRef, key: ConversationKey | None
    ) -> CommandReply:
        """Run one command for ``user``: the one dispatch every adapter uses.

        ``key`` is the conversation it was typed in, None where the platform doesn't
        say (then /reset explains how to start over instead).
        """
        name, arg = name.strip().lower(), arg.strip()
        p = self._platform_help(user.platform).command_prefix
        try:
            if name == "model":
                if not arg:
                    return await self.models_text(user, key)
                model, strict = _strict_arg(arg)
                if not model:  # `/model strict`: the current model, strictly
                    model = await self.current_model(user, key)
                return await self.set_model(user, model, strict=strict)
            if name == "models":
                return await self.models_text(user, key)
            if name == "reset":
                if key is None:
                    return CommandReply(
                        "Every conversation in a channel is its own thread: mention me in a "
                        f"new message to start fresh. In a DM with me, `{p}reset` forgets it."
                    )
                return await self.reset(key, user)
            if name == "system":
                if not arg:
                    return CommandReply(f"Usage: `{p}system <persona>` or `{p}system clear`.")
                return await self.set_system(user, None if arg.lower() == "clear" else arg)
            if name == "usage":
                return await self.usage(user)
            if name == "cache":
                return await self.cache(user, arg)
            if name == "help":
                return self.help(user.platform)
        except BotError as exc:
            return CommandReply(exc.user_text)
        return CommandReply(f"Unknown command `{p}{name}`. " + self.help(user.platform).text)

    async def run_text_command(self, incoming: Incoming) -> CommandReply | None:
        """Run ``/name args`` typed as a message; None when the text is not a command."""
        text = incoming.text.strip()
        if not text.startswith("/"):
            return None
        name, _, arg = text[1:].partition(" ")
        return await self.run_command(name, arg, user=incoming.author, key=incoming.key)


_GENERIC_HELP = PlatformHelp("Send me a message and I answer.")


def clean_persona(prompt: str | None) -> str | None:
    """A persona as stored: valid Unicode, trimmed; None when empty (not set)."""
    return clean_text(prompt or "").strip() or None


def persona_problem(prompt: str) -> CommandReply | None:
    """The refusal of a persona over ``MAX_SYSTEM_PROMPT_CHARS``; None when it fits."""
    if len(prompt) <= MAX_SYSTEM_PROMPT_CHARS:
        return None
    return CommandReply(
        f"That persona is {len(prompt):,} characters; the limit is {MAX_SYSTEM_PROMPT_CHARS:,}."
    )


def _strict_arg(arg: str) -> tuple[str, bool]:
    """``<id> strict`` → (id, True); ``<id>`` → (id, False)."""
    model, _, flag = arg.strip().rpartition(" ")
    if flag.lower() == "strict":  # also `strict` alone: ("", True)
        return model.strip(), True
    return arg.strip(), False


# Model ids that are not chat models: speech-to-text, text-to-speech, safety classifiers
# and embeddings (Groq lists whisper-*, playai-tts, *orpheus*, llama-guard, prompt-guard).
# OpenAI's list also holds image, moderation, realtime/audio and legacy completion models.
_NOT_CHAT = (
    "whisper",
    "tts",
    "orpheus",
    "guard",
    "embed",
    "dall-e",
    "image",
    "moderation",
    "realtime",
    "transcribe",
    "audio",
    "babbage",
    "davinci",
)


def is_chat_model(model_id: str) -> bool:
    """Whether a model id looks like a chat model (not speech, TTS, guard, image,
    moderation or embedding). Only the last path segment counts: llama.cpp lists file
    paths, whose folders say nothing about the model."""
    name = model_id.replace("\\", "/").rsplit("/", 1)[-1].lower()
    return not any(marker in name for marker in _NOT_CHAT)


_WINDOW_SOURCES = {
    "server": "",
    "settings": ", from CONTEXT_TOKEN_BUDGET",
    "default": ", assumed: the server doesn't say; set CONTEXT_TOKEN_BUDGET",
    "learned": ", lowered after the server refused a longer request",
}


def window_text(model: ModelInfo) -> str:
    """``131,072 tokens context`` plus where the figure comes from when not the server."""
    return f"{model.context_window:,} tokens context{_WINDOW_SOURCES.get(model.context_source, '')}"


def _cached_note(summary: UsageSummary) -> str:
    if not summary.cached:
        return ""
    return f"\n{summary.cached} answer(s) came from the response cache and cost nothing."


def _estimated_note(summary: UsageSummary) -> str:
    if not summary.estimated:
        return ""
    return (
        f"\nToken counts of {summary.estimated} request(s) are estimated from the text: "
        "the model server reports no usage."
    )


def usage_table(totals: dict[str, UsageSummary]) -> str:
    """Replies and tokens per model as a fixed-width table in a code block (it lines up
    on Discord, Slack and a terminal alike)."""
    header = ("model", "replies", "tokens in", "tokens out", "cached")
    rows = [
        (m, f"{u.requests:,}", f"{u.prompt_tokens:,}", f"{u.completion_tokens:,}", f"{u.cached:,}")
        for m, u in totals.items()
    ]
    total = (
        "all",
        f"{sum(u.requests for u in totals.values()):,}",
        f"{sum(u.prompt_tokens for u in totals.values()):,}",
        f"{sum(u.completion_tokens for u in totals.values()):,}",
        f"{sum(u.cached for u in totals.values()):,}",
    )
    lines = [header, *rows, *([total] if len(rows) > 1 else [])]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

    def render(line: tuple[str, ...]) -> str:
        first = line[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True))])

    return "```\n" + "\n".join(render(line) for line in lines) + "\n```"
