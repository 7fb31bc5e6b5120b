"""The Bolt ``AsyncApp`` wiring: listeners → translate → ``Engine`` turns and commands.

Bolt acks every event before its listener runs (``process_before_response`` off), so
Slack's 3-second rule never waits for the model; each accepted message becomes one
tracked task that runs ``engine.handle`` with a Slack sink. Bolt's built-in
middleware verifies HTTP-mode signatures and drops the bot's own messages; ours then
drops redeliveries: an ``event_id`` already seen (Socket Mode redelivery, an HTTP
retry while the first delivery is still answering), or any retry
(``X-Slack-Retry-Num`` > 0; the header is "0" on first Socket Mode deliveries) that
carries no event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.commands import SlashCommands
from adapters.slack.config import PLATFORM, SlackSettings
from adapters.slack.surface import ReplyNotDelivered, ReplyTarget, SlackSurface, slack_call
from adapters.slack.translate import (
    Route,
    is_dm_channel,
    route_mention,
    route_message,
    to_incoming,
    user_ref,
)
from bot.access import Requester
from bot.adapter import AdapterContext
from bot.errors import BotError
from bot.log import conversation_context

__all__ = ["SUGGESTED_PROMPTS", "Identity", "SlackBot"]

log = logging.getLogger(__name__)

# A cancelled answer still ends its message with a note; never wait longer than that.
_CANCELLED_FINISH_S = 2.5

SEEN_EVENTS = 10_000  # event ids remembered for deduplication
SUGGESTED_PROMPTS = [
    {"title": "Explain a concept", "message": "Explain, simply and briefly, how "},
    {"title": "Summarise a text", "message": "Summarise the following text in 5 bullets:\n"},
    {"title": "Draft a message", "message": "Help me write a short, friendly message about "},
]

Body = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the bot is in its workspace (from ``auth.test``)."""

    team_id: str
    bot_user_id: str
    bot_id: str


class SlackBot:
    """Owns the Bolt app, its listeners and the tasks answering messages."""

    def __init__(
        self,
        context: AdapterContext[SlackSettings],
        *,
        client: AsyncWebClient,
        identity: Identity,
        signing_secret: str = "",
    ) -> None:
        self.context = context
        self.engine = engine = context.engine
        self.settings = context.settings
        self._access = context.settings.access_policy()
        self.client = client
        self.identity = identity
        # Bolt's default authorization calls auth.test for every event until one call
        # has returned (so 20 mentions at once made up to 20 calls); the adapter already
        # called it at start-up, and ``authorize`` hands Bolt that answer instead. Bolt
        # ignores a client's token once ``authorize`` is given (and says so), so its
        # client carries none: each event's client gets the token from ``authorize``.
        token = client.token

        async def authorize(user_id: str | None) -> AuthorizeResult:
            # A plain function: Bolt passes arguments by name, "self" included.
            return AuthorizeResult(
                enterprise_id=None,
                team_id=identity.team_id,
                bot_id=identity.bot_id or None,
                bot_user_id=identity.bot_user_id,
                bot_token=token,
                user_id=user_id,
            )

        self.app = AsyncApp(
            client=AsyncWebClient(
                base_url=client.base_url,
                session=client.session,
                retry_handlers=client.retry_handlers,
            ),
            authorize=authorize,
            signing_secret=signing_secret,
            name="groqbot",
            logger=log,
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._threads: set[str] = set()  # channel threads the bot answers in
        self._accepting = True
        self.app.use(self._dedupe)
        self.app.event("app_mention")(self._on_mention)
        self.app.event("message")(self._on_message)
        self.app.event("assistant_thread_started")(self._on_thread_started)
        self.app.event("assistant_thread_context_changed")(self._on_context_changed)
        commands = SlashCommands(
            engine=engine,
            prefix=context.settings.help().command_prefix,
            team_id=identity.team_id,
            spawn=self.spawn,
            allowed=self._allowed,
        )
        commands.register(self.app)

    # ----- lifecycle -----

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as a tracked task (awaited or cancelled by ``drain``)."""
        if not self._accepting:
            work.close()
            return
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, grace_s: float) -> None:
        """Stop taking messages; give answers in flight ``grace_s`` to end, then cancel."""
        self._accepting = False
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("cancelled %d Slack answer(s) still running at shutdown", len(pending))
            await asyncio.wait(pending, timeout=_CANCELLED_FINISH_S)

    # ----- middleware -----

    async def _dedupe(
        self, body: Body, request: AsyncBoltRequest, next: Callable[[], Awaitable[None]]
    ) -> BoltResponse | None:
        retry = request.headers.get("x-slack-retry-num", ["0"])[0] or "0"
        event_id = body.get("event_id")
        duplicate = int(retry) > 0 if not event_id else str(event_id) in self._seen
        if not duplicate and event_id:
            self._seen[str(event_id)] = None
            if len(self._seen) > SEEN_EVENTS:
                self._seen.popitem(last=False)
            # Another replica (behind a load balancer) or an earlier process may have
            # taken this event already: the database says which one answers it.
            duplicate = not await self.engine.claim_event(PLATFORM, str(event_id))
        if duplicate:
            log.info("ignoring redelivered event %s (retry %s)", event_id, retry)
            return BoltResponse(status=200, body="")  # acked, never answered twice
        await next()
        return None

    # ----- listeners (Bolt injects arguments by name) -----

    async def _on_mention(self, event: Body) -> None:
        ident = self.identity
        route = route_mention(event, team_id=ident.team_id, bot_user_id=ident.bot_user_id)
        if route is not None:
            self.spawn(self._answer(event, route))

    async def _on_message(self, event: Body) -> None:
        ident = self.identity
        route = route_message(event, team_id=ident.team_id, bot_user_id=ident.bot_user_id)
        if route is not None:
            self.spawn(self._answer(event, route))

    async def _on_thread_started(self, event: Body) -> None:
        self.spawn(self._suggest(event.get("assistant_thread") or {}))

    async def _on_context_changed(self) -> None:
        """Acked so Slack does not redeliver it; the bot keeps no channel context."""

    # ----- answering -----

    def _allowed(self, user_id: str, channel: str) -> bool:
        dm = is_dm_channel(channel)
        who = Requester.of(
            user_id,
            places=() if dm else ((channel,),),
            is_dm=dm,
            is_admin=self.engine.is_admin(user_ref(user_id)),
        )
        return self._access.allows(who)

    async def _answer(self, event: Body, route: Route) -> None:
        try:
            user = str(event["user"])
            if not self._allowed(user, route.channel):
                log.debug("message %s ignored by the allow/deny lists", event.get("ts"))
                return
            # Lines about this answer name its conversation.
            with conversation_context(route.key.storage_id(), user_id=user_ref(user).storage_id()):
                await self._answer_allowed(event, route, user)
        except Exception:  # top of a task: log it, keep the app running
            log.exception("answering Slack message %s failed", event.get("ts"))

    async def _answer_allowed(self, event: Body, route: Route, user: str) -> None:
        if route.needs_history and not await self._known_thread(route):
            return
        channel = route.key.channel_ref
        if route.needs_mode_all and not (channel and await self.engine.answers_all(channel)):
            return
        if not route.key.is_dm:
            self._threads.add(route.key.storage_id())
        incoming = to_incoming(event, route, bot_user_id=self.identity.bot_user_id)
        target = ReplyTarget(
            self.identity.team_id, route.channel, route.thread_ts, user, route.assistant
        )
        context = self.context
        surface = SlackSurface(
            self.client, target, settings=self.settings, pacer=context.pacer, clock=context.clock
        )
        await self.engine.handle(incoming, context.editing_sink(surface, PLATFORM))

    async def _known_thread(self, route: Route) -> bool:
        """A thread the bot was mentioned in before (this run, or stored history)."""
        if route.key.storage_id() in self._threads:
            return True
        try:
            return await self.engine.has_conversation(route.key)
        except BotError as exc:
            log.warning("could not tell whether a thread is a conversation: %s", exc)
            return False

    async def _suggest(self, thread: Body) -> None:
        """Offer starter prompts when a user opens an assistant thread."""
        channel, user = str(thread.get("channel_id", "")), str(thread.get("user_id", ""))
        if not (channel and thread.get("thread_ts") and self._allowed(user, channel)):
            return
        with contextlib.suppress(ReplyNotDelivered):  # logged already; prompts are optional
            await slack_call(
                self.client.assistant_threads_setSuggestedPrompts(
                    channel_id=channel,
                    thread_ts=str(thread["thread_ts"]),
                    title="Try asking:",
                    prompts=SUGGESTED_PROMPTS,
                ),
                "assistant.threads.setSuggestedPrompts",
            )
