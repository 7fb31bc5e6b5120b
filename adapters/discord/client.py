"""The discord.py client: which messages to answer, where, and the app command sync.

``on_message`` only filters, takes the message's place in its channel's line
(``ordering``) and spawns a task; the task resolves the conversation
(``translate.route``; a plain message without a mention only in a channel set to mode
``all``), checks the allow/deny lists, opens a thread when needed, reads
attachments and, once the messages ahead have gone, hands the turn to ``Engine.handle``
with an ``EditingSink`` over a ``DiscordSurface``.

Nothing waits silently on Discord: discord.py raises ``RateLimited`` instead of
sleeping through a rate limit longer than ``MAX_RATELIMIT_WAIT_S``, thread creation
gets ``THREAD_WAIT_S`` at most, and getting ready to answer shows "typing…" when it
takes longer than ``TYPING_AFTER_S``. When Discord refuses new threads in a channel
(a burst of threads earns a 429 of minutes), answers there go in the channel as
replies, with a note, until the refusal ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import discord

from adapters.discord.attachments import CdnPolicy, Downloader, NotedSink, collect
from adapters.discord.commands import CommandTree, Interaction, build_commands
from adapters.discord.config import PLATFORM, DiscordSettings
from adapters.discord.ordering import Ticket, Turnstile
from adapters.discord.ratelimits import rate_limit_trace
from adapters.discord.surface import (
    NO_MENTIONS,
    PLATFORM_ERRORS,
    Answerable,
    DiscordSurface,
    describe_error,
    describe_http_error,
    retry_delay,
)
from adapters.discord.translate import (
    Route,
    channel_key,
    channel_ref,
    is_conversational,
    mentions_bot,
    route,
    strip_mentions,
    thread_name,
    to_incoming,
    user_ref,
)
from bot.access import Requester
from bot.adapter import NO_METRICS, AdapterContext
from bot.errors import BotError
from bot.log import conversation_context
from bot.ports import ReplySink

__all__ = ["INVITE_PERMISSIONS", "DiscordBot", "invite_url"]

log = logging.getLogger(__name__)

INVITE_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    create_public_threads=True,
    read_message_history=True,
    use_application_commands=True,
)
_MAX_REMEMBERED = 50_000  # reply-chain roots kept in memory (older ones are re-fetched)
_MAX_CHAIN_HOPS = 25
_EMPTY_WARN_AFTER = 3
# discord.py sleeps through a 429 (or an exhausted bucket) up to this long inside the
# call, and raises RateLimited beyond it; 30 s is the least it accepts.
MAX_RATELIMIT_WAIT_S = 30.0
# Longest wait for a new thread before answering in the channel instead; a thread
# still not open then is given up (discord.py may be sleeping through a rate limit)
# and new threads in that channel pause for MAX_RATELIMIT_WAIT_S.
THREAD_WAIT_S = 3.0
# Preparing an answer (opening its thread, reading attachments) longer than this shows
# "typing…" once; the reply's own typing indicator takes over when the turn starts.
TYPING_AFTER_S = 0.5
THREADS_PAUSED = (
    "Discord isn't letting me open a thread here right now, so I'm answering in the "
    "channel; reply to my answer to continue."
)


@dataclass(slots=True)
class _Target:
    """Where a reply goes: a channel or thread, as a reply to a message or not."""

    channel: Answerable
    reply_to: discord.Message | None = None
    notes: list[str] = field(default_factory=list)


def invite_url(client_id: int | str) -> str:
    """The OAuth2 URL that adds the bot with the permissions it needs."""
    return discord.utils.oauth_url(
        client_id, permissions=INVITE_PERMISSIONS, scopes=("bot", "applications.commands")
    )


class DiscordBot(discord.Client):
    """A ``discord.Client`` that answers mentions, its threads, reply chains and DMs, and
    every top-level message of a channel whose mode is ``all``."""

    def __init__(
        self,
        context: AdapterContext[DiscordSettings],
        *,
        guild_ready_timeout: float,
        **options: Any,
    ) -> None:
        """``options`` go to discord.py's client as they are (``shard_count``, …)."""
        # Off with the metrics: aiohttp's tracing costs a little on every request.
        tracing: dict[str, Any] = (
            {} if context.metrics is NO_METRICS
            else {"http_trace": rate_limit_trace(context.metrics, PLATFORM)}
        )  # fmt: skip
        intents = discord.Intents.default()
        intents.message_content = True  # privileged: must be enabled in the developer portal
        super().__init__(
            intents=intents,
            guild_ready_timeout=guild_ready_timeout,
            allowed_mentions=NO_MENTIONS,
            max_ratelimit_timeout=MAX_RATELIMIT_WAIT_S,
            **options,
            **tracing,
        )
        self.context = context
        self.settings = context.settings
        self.engine = context.engine
        self._access = context.settings.access_policy()
        self.tree = CommandTree(self, allowed=self.interaction_allowed)
        for command in build_commands(context.engine):
            self.tree.add_command(command)
        self._tasks: set[asyncio.Task[None]] = set()
        self._turnstile = Turnstile()
        self._accepting = True
        self._roots: OrderedDict[int, int] = OrderedDict()  # message id -> chain root id
        self._threads: set[int] = set()  # threads known to be conversations
        self._threads_paused: dict[int, float] = {}  # channel id -> clock time it ends
        self._downloads = Downloader(CdnPolicy.for_api_base(context.settings.api_base))
        self._blank_messages = 0
        self._announced = False

    # ----- lifecycle -----

    async def setup_hook(self) -> None:
        """Runs after login, before the gateway connects: publish the slash commands."""
        try:
            if self.settings.guild_ids:
                # Guild commands appear at once; global ones can take up to an hour.
                for gid in self.settings.guild_ids:
                    guild = discord.Object(int(gid))
                    self.tree.copy_global_to(guild=guild)
                    await self.tree.sync(guild=guild)
            else:
                await self.tree.sync()
        except ValueError:
            log.error("DISCORD_GUILD_IDS must be numeric server ids; slash commands not published")
        except discord.HTTPException as exc:
            log.error(
                "Publishing slash commands failed (%s). Re-invite the bot with the "
                "applications.commands scope: %s",
                describe_http_error(exc),
                invite_url(self.settings.client_id or self.application_id or 0),
            )

    async def on_ready(self) -> None:
        if self._announced:
            return
        self._announced = True
        assert self.user is not None
        client_id = self.settings.client_id or self.application_id or self.user.id
        log.info(
            "Discord: logged in as %s (id %s) in %d server(s). Invite URL: %s",
            self.user,
            self.user.id,
            len(self.guilds),
            invite_url(client_id),
        )
        if not self.guilds:
            log.warning("Discord: the bot is in no server yet; open the invite URL above.")

    async def close(self) -> None:
        await super().close()
        await self._downloads.aclose()

    def dispatch(self, event: str, /, *args: Any, **kwargs: Any) -> None:
        """Hand ``event`` to its listeners, unless the client is closed (dropped, logged).

        discord.py delays ``on_ready`` by ``guild_ready_timeout`` after every READY (a
        start, a fresh session, its own re-identify) in a task that ``close()`` leaves
        running, while ``close()`` sets ``self.loop`` to a sentinel. When that timer
        fires after close, ``Client.dispatch`` builds the ``_run_event`` coroutine and
        then fails on ``self.loop.create_task``: the coroutine leaks ("never awaited")
        and the timer task dies with an ``AttributeError`` nobody retrieves. A closed
        client has nothing to hand events to (its turns were drained before close, and
        it answers nothing more), so they stop here instead.
        """
        if self.is_closed():
            log.debug("Discord event %r arrived after the client closed; dropped", event)
            return
        super().dispatch(event, *args, **kwargs)

    async def drain(self, grace_s: float) -> None:
        """Stop taking messages; give in-flight turns ``grace_s`` to end, then cancel them."""
        self._accepting = False
        pending = set(self._tasks)
        if pending:
            _, late = await asyncio.wait(pending, timeout=grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    # ----- access -----

    def _allowed(self, user: discord.abc.User, channel: Any, guild_id: int | None) -> bool:
        roles = [r.id for r in user.roles] if isinstance(user, discord.Member) else []
        channels = [channel.id] if channel is not None else []
        if isinstance(channel, discord.Thread) and channel.parent_id is not None:
            channels.append(channel.parent_id)
        who = Requester.of(
            user.id,
            role_ids=roles,
            places=() if guild_id is None else ((guild_id,), channels),
            is_dm=guild_id is None,
            is_admin=self.engine.is_admin(user_ref(user)),
        )
        return self._access.allows(who)

    def interaction_allowed(self, interaction: Interaction) -> bool:
        return self._allowed(interaction.user, interaction.channel, interaction.guild_id)

    # ----- messages -----

    async def on_message(self, message: discord.Message) -> None:
        # Never answer ourselves, other bots, webhooks or system notices.
        if not self._accepting or not is_conversational(message):
            return
        ticket = self._turnstile.ticket(message.channel.id)  # before any await: arrival order
        task = asyncio.create_task(
            self._handle(message, ticket), name=f"discord-message-{message.id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, message: discord.Message, ticket: Ticket) -> None:
        try:
            await self._answer(message, ticket)
        except Exception:  # top of a task: log it, never kill the client
            log.exception("handling Discord message %s failed", message.id)
        finally:
            ticket.pass_on()  # dropped or failed: the next message must not wait for it

    async def _answer(self, message: discord.Message, ticket: Ticket) -> None:
        guild_id = message.guild.id if message.guild else None
        if not self._allowed(message.author, message.channel, guild_id):
            log.debug("message %s ignored by the allow/deny lists", message.id)
            return
        assert self.user is not None
        role_id = self._bot_role_id(message)  # once per message: mention checks need it
        mentioned = mentions_bot(message, self.user.id, role_id)
        plan = await self._route(message, mentioned)
        if plan is None or self._looks_blank(message, plan, mentioned):
            return
        # Lines about this answer (its thread, its attachments) name its conversation.
        with conversation_context(
            plan.key.storage_id(), user_id=user_ref(message.author).storage_id()
        ):
            await self._answer_in(message, ticket, plan, role_id)

    async def _answer_in(
        self,
        message: discord.Message,
        ticket: Ticket,
        plan: Route,
        role_id: int | None,
    ) -> None:
        """The rest of ``_answer``, for a message it will answer per ``plan``."""
        assert self.user is not None
        if plan.open_thread:
            ticket.pass_on()  # a new thread is a new conversation: nothing to keep order with
        text = strip_mentions(message.content, self.user.id, role_id)
        target = await self._target(message, plan, text)
        if target is None:
            return
        root = int(plan.key.thread) if plan.key.thread and not plan.key.is_dm else None
        async with self._typing_if_slow(target.channel):
            collected = await collect(
                message.attachments,
                max_bytes=self.settings.max_attachment_bytes,
                downloader=self._downloads,
            )
        incoming = to_incoming(message, plan.key, text=text, attachments=collected.attachments)
        reply_to = target.reply_to
        surface = DiscordSurface(
            target.channel,
            settings=self.settings,
            clock=self.context.clock,
            conversation=plan.key.storage_id(),
            reply_to=reply_to,
            on_post=(lambda mid: self._remember(mid, root)) if reply_to and root else None,
        )
        sink: ReplySink = self.context.editing_sink(surface, PLATFORM)
        notes = [*target.notes, *collected.notes]
        if notes:
            sink = NotedSink(sink, notes)
        if not plan.open_thread:
            await ticket.wait()
        ticket.pass_on()
        await self.engine.handle(incoming, sink)

    @contextlib.asynccontextmanager
    async def _typing_if_slow(self, channel: Answerable) -> AsyncIterator[None]:
        """Show "typing…" in ``channel`` once if the block outlasts ``TYPING_AFTER_S``."""
        timer = asyncio.create_task(self._type_after(channel, TYPING_AFTER_S))
        try:
            yield
        finally:
            timer.cancel()

    async def _type_after(self, channel: Answerable, delay_s: float) -> None:
        await self.context.clock.sleep(delay_s)
        try:
            await channel.typing()  # one indicator, shown ~10 s or until the bot posts
        except PLATFORM_ERRORS as exc:
            log.info("typing indicator in %s failed: %s", channel.id, describe_error(exc))

    def _bot_role_id(self, message: discord.Message) -> int | None:
        role = message.guild.self_role if message.guild else None
        return role.id if role else None

    async def _route(self, message: discord.Message, mentioned: bool) -> Route | None:
        assert self.user is not None
        me = self.user.id
        channel = message.channel
        known_thread = False
        reply_root = None
        answer_all = False
        if isinstance(channel, discord.Thread):
            known_thread = not mentioned and await self._is_known_thread(channel)
        elif message.guild is not None:
            if message.reference is not None:
                reply_root = await self._reply_root(message)
            if not mentioned and reply_root is None:
                # Every other top-level message: answered only where admins chose mode all.
                answer_all = await self.engine.answers_all(
                    channel_ref(message.guild.id, channel.id)
                )
        plan = route(
            message,
            bot_id=me,
            mode=self.settings.reply_mode,
            mentioned=mentioned,
            reply_root=reply_root,
            known_thread=known_thread,
            answer_all=answer_all,
        )
        if plan is not None and plan.key.thread and not plan.key.is_dm:
            if isinstance(channel, discord.Thread):
                self._threads.add(channel.id)
            else:
                self._remember(message.id, int(plan.key.thread))
        return plan

    async def _is_known_thread(self, thread: discord.Thread) -> bool:
        """A thread the bot started, or one it was mentioned in before (has history)."""
        assert self.user is not None
        if thread.owner_id == self.user.id or thread.id in self._threads:
            return True
        if thread.parent_id is None:
            return False
        key = channel_key(thread.guild.id, thread.parent_id, thread.id)
        try:
            known = await self.engine.has_conversation(key)
        except BotError as exc:
            with conversation_context(key.storage_id()):
                log.warning("could not tell whether this thread is a conversation: %s", exc)
            return False
        if known:
            self._threads.add(thread.id)
        return known

    def _looks_blank(self, message: discord.Message, plan: Route, mentioned: bool) -> bool:
        """A message we'd answer that arrived without any text: the content intent is off.

        Real Discord blanks guild messages that don't mention the bot when the
        MESSAGE CONTENT intent is missing; answering "your message is empty" to each
        would spam the thread, so they are skipped and the operator is told.
        """
        if plan.key.is_dm or message.content or message.attachments or message.stickers:
            return False
        if mentioned:
            return False
        self._blank_messages += 1
        if self._blank_messages == _EMPTY_WARN_AFTER:
            log.warning(
                "Discord keeps delivering messages without their text: the MESSAGE CONTENT "
                "intent seems disabled. Enable it in the Discord developer portal "
                "(Applications → your bot → Bot → Privileged Gateway Intents) and restart."
            )
        return True

    async def _target(self, message: discord.Message, plan: Route, text: str) -> _Target | None:
        """Where the reply goes: a new thread, a reply to the message, or the channel."""
        channel = message.channel
        if not isinstance(channel, Answerable):
            log.info("message %s is in an unsupported channel type; ignored", message.id)
            return None
        if plan.open_thread and isinstance(channel, discord.TextChannel):
            # Same conversation key either way: the thread id would be the message id.
            async with self._typing_if_slow(channel):
                opened = await self._open_thread(message, channel, text)
            if isinstance(opened, discord.Thread):
                self._threads.add(opened.id)
                return _Target(opened)
            return _Target(channel, message, [opened] if opened else [])
        # Where threads can't be opened (voice channel chat) a reply chain is used instead.
        as_reply = plan.reply_to == message.id or plan.open_thread
        return _Target(channel, message if as_reply else None)

    async def _open_thread(
        self, message: discord.Message, channel: discord.TextChannel, text: str
    ) -> discord.Thread | str:
        """A thread on ``message``, or the note to show above an answer given in the
        channel instead ("" for none). Never waits longer than ``THREAD_WAIT_S``."""
        clock = self.context.clock
        if self._threads_paused.get(channel.id, 0.0) > clock.now():
            return THREADS_PAUSED
        name = thread_name(text, message.author.display_name)
        try:
            async with asyncio.timeout(THREAD_WAIT_S):
                return await message.create_thread(name=name, auto_archive_duration=1440)
        except discord.RateLimited as exc:
            pause, why = exc.retry_after, describe_error(exc)
        except TimeoutError:
            pause, why = MAX_RATELIMIT_WAIT_S, f"no thread after {THREAD_WAIT_S:.0f} s"
        except PLATFORM_ERRORS as exc:
            if not (isinstance(exc, discord.HTTPException) and exc.status == 429):
                # e.g. 403 (no Create Public Threads permission here), a broken connection
                log.warning(
                    "could not open a thread (%s); replying in the channel instead",
                    describe_error(exc),
                )
                return ""
            pause, why = retry_delay(exc, 1) or MAX_RATELIMIT_WAIT_S, describe_error(exc)
        now = clock.now()
        self._threads_paused = {c: t for c, t in self._threads_paused.items() if t > now}
        self._threads_paused[channel.id] = now + pause
        log.warning(
            "Discord refuses new threads in channel %s (%s): answering there as replies "
            "for the next %.0f s",
            channel.id,
            why,
            pause,
        )
        return THREADS_PAUSED

    # ----- reply chains -----

    def _remember(self, message_id: int, root: int | None) -> None:
        if root is None:
            return
        self._roots[message_id] = root
        self._roots.move_to_end(message_id)
        while len(self._roots) > _MAX_REMEMBERED:
            self._roots.popitem(last=False)

    async def _fetch(self, channel: Any, message_id: int) -> discord.Message | None:
        cached = discord.utils.get(self.cached_messages, id=message_id)
        if cached is not None:
            return cached
        try:
            fetched: discord.Message = await channel.fetch_message(message_id)
        except discord.HTTPException:
            return None
        return fetched

    async def _reply_root(self, message: discord.Message) -> int | None:
        """Root of the reply chain when the message replies to one of the bot's messages."""
        ref = message.reference
        if ref is None or ref.message_id is None or ref.channel_id != message.channel.id:
            return None
        if ref.message_id in self._roots:
            return self._roots[ref.message_id]
        parent = ref.resolved if isinstance(ref.resolved, discord.Message) else None
        parent = parent or await self._fetch(message.channel, ref.message_id)
        assert self.user is not None
        if parent is None or parent.author.id != self.user.id:
            return None
        return await self._walk_to_root(parent)

    async def _parent(self, message: discord.Message) -> discord.Message | None:
        """The message ``message`` replies to, if any and still there."""
        ref = message.reference
        if ref is None or ref.message_id is None:
            return None
        return await self._fetch(message.channel, ref.message_id)

    async def _walk_to_root(self, bot_message: discord.Message) -> int:
        """Follow bot answer → question → earlier bot answer … to the first question."""
        assert self.user is not None
        current = bot_message
        for _ in range(_MAX_CHAIN_HOPS):
            if current.id in self._roots:
                return self._roots[current.id]
            question = await self._parent(current)
            if question is None:
                return current.id
            earlier = await self._parent(question)
            if earlier is None or earlier.author.id != self.user.id:
                return question.id
            current = earlier
        return current.id
