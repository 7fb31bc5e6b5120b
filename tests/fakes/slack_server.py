"""A fake Slack (Web API under ``/api/``, Socket Mode websocket, ``response_url``s) on
127.0.0.1 that unmodified slack-bolt / slack-sdk talk to.

Point the SDK at it with ``AsyncWebClient(base_url=fake.base_url)`` (or the bot's
``slack_api_base_url`` setting); ``apps.connections.open`` hands out the websocket
URL. Tests inject traffic (``mention``, ``say``, ``dm``, ``bot_says``, ``edit``,
``delete``, ``start_assistant_thread``, ``command``, ``block_action``, ``event``),
drive HTTP mode with ``fake.http`` (signed POSTs, timing, retries), and read what the
app did through ``calls``, ``messages`` / ``thread()``, ``ephemerals``,
``responses``, ``statuses``, ``envelopes`` / ``acks`` and ``count_429``.
``await fake.wait_for(predicate)`` re-checks on every state change (no polling).

Layout: payload builders in ``slack_payloads``, Web API plumbing (auth, faults, rate
limits) in ``slack_webapi``, the methods and message store in ``slack_methods``,
Socket Mode in ``slack_socket``, the HTTP-mode driver in ``slack_http``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
from aiohttp import web

from bot.ports import SystemClock
from tests.fakes import slack_payloads as p
from tests.fakes.slack_http import HttpDriver, HttpResult
from tests.fakes.slack_methods import FakeMessage, Methods
from tests.fakes.slack_payloads import FakeUser, Json
from tests.fakes.slack_socket import Ack, Envelope, SocketMode
from tests.fakes.slack_webapi import ApiCall, RateRule, WebApi, _Clock

__all__ = [
    "Ack",
    "ApiCall",
    "Delivery",
    "Envelope",
    "FakeMessage",
    "FakeSlack",
    "FakeUser",
    "HttpDriver",
    "HttpResult",
    "RateRule",
]

T = TypeVar("T")


@dataclass(slots=True)
class Delivery:
    """What a test injected: the user message's ``ts`` (if any), the body, the envelope."""

    body: Json
    channel: str = ""
    ts: str = ""
    envelope: Envelope | None = None
    response_url: str = ""

    @property
    def event_id(self) -> str:
        return str(self.body.get("event_id", ""))


class FakeSlack(WebApi, Methods, SocketMode):
    """One workspace: the bot, humans (``alice``, ``bob``, ``carol``; ``add_user`` for
    more), channels ``general``, ``random``, a private ``group`` and a DM per user."""

    def __init__(
        self,
        *,
        clock: _Clock | None = None,
        bot_token: str = "xoxb-fake-bot-token",
        app_token: str = "xapp-1-fake-app-token",
        signing_secret: str = "fake-signing-secret",
        echo_bot_messages: bool = True,
    ) -> None:
        self.clock = clock or SystemClock()
        self.bot_token, self.app_token, self.signing_secret = bot_token, app_token, signing_secret
        self.team_id, self.app_id = "T0FAKE0001", "A0FAKE0001"
        self.bot_user_id, self.bot_id = "U0BOT00001", "B0BOT00001"
        # Real Slack echoes the bot's own posts as message events; the app must ignore them.
        self.echo_bot_messages = echo_bot_messages
        self.other_bot = FakeUser("U0OTHERBOT", "otherbot", bot_id="B0OTHER001")
        self.general, self.random, self.group = "C0GENERAL1", "C0RANDOM01", "G0PRIVATE1"
        self._init_webapi()
        self._init_methods()
        self._init_socket()
        self.known_channels |= {self.general, self.random, self.group}
        self.users: dict[str, FakeUser] = {}
        self.alice, self.bob, self.carol = (self.add_user(n) for n in ("alice", "bob", "carol"))
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    # ----- lifecycle -----

    async def start(self) -> FakeSlack:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/link/", self._ws)
        app.router.add_post("/response/{rid}", self._response_url)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._session = aiohttp.ClientSession()
        return self

    async def aclose(self) -> None:
        await self._stop_socket_mode()
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeSlack:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    @property
    def http(self) -> HttpDriver:
        assert self._session is not None, "start() the fake first"
        return HttpDriver(self.signing_secret, self._session)

    def add_user(self, name: str) -> FakeUser:
        user = FakeUser(f"U0{name.upper()[:7]:0<7}{len(self.users):02d}", name)
        self.users[user.id] = user
        self.known_channels.add(self.dm_channel(user))
        return user

    def dm_channel(self, user: FakeUser) -> str:
        return "D" + user.id[1:]

    def new_response_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/response/{uuid.uuid4().hex[:12]}"

    # ----- awaiting -----

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(
        self, predicate: Callable[[], T | None], within: float = 5.0, what: str = ""
    ) -> T:
        """Return the predicate's first truthy value, re-checked on every state change."""
        try:
            async with asyncio.timeout(within), self._changed:
                found = await self._changed.wait_for(predicate)
                assert found is not None  # Condition.wait_for returns only a truthy value
                return found
        except TimeoutError:
            recent = [f"{c.method}:{c.status}:{c.error}" for c in self.calls[-8:]]
            raise AssertionError(
                f"timed out after {within}s waiting for {what or predicate}; recent calls: {recent}"
            ) from None

    async def wait_ack(self, envelope: Envelope, within: float = 5.0) -> Ack:
        ack = await self.wait_for(lambda: envelope.ack, within, f"ack of {envelope.kind}")
        assert ack is not None
        return ack

    # ----- injecting traffic -----

    def body(self, event: Json) -> Json:
        """Wrap an event in the Events API body (fresh ``event_id``)."""
        return p.event_callback(
            event, team_id=self.team_id, app_id=self.app_id, bot_user_id=self.bot_user_id
        )

    async def event(self, event: Json, *, socket: bool = True) -> Delivery:
        """Deliver an event over Socket Mode (``socket=False``: only build the body)."""
        body = self.body(event)
        delivery = Delivery(body, str(event.get("channel", "")), str(event.get("ts", "")))
        if socket:
            delivery.envelope = await self.send_envelope("events_api", body)
        return delivery

    def _human_message(self, user: FakeUser, channel: str, text: str, thread: str | None) -> str:
        ts = self.ts()
        self.store(FakeMessage(channel, ts, user.id, text, thread_ts=thread))
        return ts

    async def mention(
        self,
        user: FakeUser,
        text: str,
        *,
        channel: str | None = None,
        thread_ts: str | None = None,
        socket: bool = True,
    ) -> Delivery:
        """``<@bot> text`` in a channel (or thread): an ``app_mention`` event."""
        channel = channel or self.general
        full = f"<@{self.bot_user_id}> {text}"
        ts = self._human_message(user, channel, full, thread_ts)
        event = p.app_mention(user.id, channel, full, ts, self.team_id, thread_ts)
        return await self.event(event, socket=socket)

    async def say(
        self, user: FakeUser, text: str, *, channel: str | None = None, thread_ts: str | None = None
    ) -> Delivery:
        """A plain channel or thread message (``message.channels`` / ``.groups``)."""
        channel = channel or self.general
        ts = self._human_message(user, channel, text, thread_ts)
        return await self.event(p.message(user.id, channel, text, ts, self.team_id, thread_ts))

    async def dm(
        self, user: FakeUser, text: str, *, thread_ts: str | None = None, socket: bool = True
    ) -> Delivery:
        """A direct message to the bot (``message.im``), optionally in a DM thread."""
        channel = self.dm_channel(user)
        ts = self._human_message(user, channel, text, thread_ts)
        event = p.message(user.id, channel, text, ts, self.team_id, thread_ts)
        return await self.event(event, socket=socket)

    async def bot_says(
        self, text: str, *, channel: str | None = None, thread_ts: str | None = None
    ) -> Delivery:
        """Another app's bot posts (the app must not answer bots)."""
        channel, bot = channel or self.general, self.other_bot
        ts = self.ts()
        self.store(FakeMessage(channel, ts, bot.id, text, bot_id=bot.bot_id, thread_ts=thread_ts))
        event = p.bot_message(bot.id, str(bot.bot_id), channel, text, ts, self.team_id, thread_ts)
        return await self.event(event)

    async def edit(self, delivery: Delivery, new_text: str) -> Delivery:
        """The user edits their message: a ``message_changed`` event."""
        message = self.messages[(delivery.channel, delivery.ts)]
        previous = message.to_api(self.team_id)
        message.text = new_text
        message.history.append(new_text)
        event = p.message_changed(
            delivery.channel, message.to_api(self.team_id), previous, self.ts()
        )
        return await self.event(event)

    async def delete(self, delivery: Delivery) -> Delivery:
        """The user deletes their message: a ``message_deleted`` event."""
        message = self.messages[(delivery.channel, delivery.ts)]
        message.deleted = True
        event = p.message_deleted(delivery.channel, message.to_api(self.team_id), self.ts())
        return await self.event(event)

    async def start_assistant_thread(
        self, user: FakeUser, *, context_channel: str | None = None
    ) -> Delivery:
        """The user opens the assistant container: ``assistant_thread_started``."""
        channel = self.dm_channel(user)
        thread_ts = self.ts()
        self.store(FakeMessage(channel, thread_ts, user.id, ""))  # the thread's root
        event = p.assistant_thread_event(
            "assistant_thread_started", user.id, channel, thread_ts, self.team_id, context_channel
        )
        delivery = await self.event(event)
        delivery.channel, delivery.ts = channel, thread_ts
        return delivery

    async def command(
        self, user: FakeUser, command: str, text: str = "", *, channel: str | None = None
    ) -> Delivery:
        """A slash command over Socket Mode; its ``response_url`` points at the fake."""
        payload = self.command_payload(user, command, text, channel=channel)
        delivery = Delivery(payload, payload["channel_id"], response_url=payload["response_url"])
        delivery.envelope = await self.send_envelope("slash_commands", payload)
        return delivery

    def command_payload(
        self, user: FakeUser, command: str, text: str = "", *, channel: str | None = None
    ) -> Json:
        return p.slash_command(
            command=command,
            text=text,
            user=user,
            channel=channel or self.general,
            team_id=self.team_id,
            app_id=self.app_id,
            response_url=self.new_response_url(),
        )

    async def block_action(
        self, user: FakeUser, action: Json, *, channel: str | None = None, container_ts: str = ""
    ) -> Delivery:
        """A ``block_actions`` interaction (e.g. a static_select choice)."""
        channel = channel or self.general
        payload = p.block_actions(
            action=action,
            user=user,
            channel=channel,
            team_id=self.team_id,
            app_id=self.app_id,
            response_url=self.new_response_url(),
            container_ts=container_ts or self.ts(),
        )
        delivery = Delivery(payload, channel, response_url=payload["response_url"])
        delivery.envelope = await self.send_envelope("interactive", payload)
        return delivery

    # ----- echo of the bot's own posts -----

    def _bot_posted(self, message: FakeMessage) -> None:
        if not (self.echo_bot_messages and self.connected):
            return
        event = p.bot_message(
            self.bot_user_id,
            self.bot_id,
            message.channel,
            message.text,
            message.ts,
            self.team_id,
            message.thread_ts,
        )
        self._spawn(self._echo(event))

    async def _echo(self, event: Json) -> None:
        if self.connected:
            await self.send_envelope("events_api", self.body(event))
