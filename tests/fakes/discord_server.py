"""A fake Discord (REST under ``/api/v10`` + gateway websocket) for real, unmodified discord.py.

Point discord.py at it with ``fake.patch()`` (``Route.BASE`` and
``DiscordWebSocket.DEFAULT_GATEWAY``, restored on exit) or with the bot's
``discord_api_base`` / ``discord_gateway_url`` settings (``fake.settings_overrides()``).

Tests inject events (``send_message``, ``send_dm``, ``send_command``,
``send_autocomplete``) and faults (``inject``, ``drop_gateway``), then read what the
bot did through ``calls``, ``messages``, ``bot_messages``, ``interactions`` and
``count_429``. ``await fake.wait_for(predicate)`` re-checks on every state change.

Rate limits are honest: every API answer carries ``X-RateLimit-*`` headers; message
create and edit share one fixed 5-per-5 s window per channel (configurable). A request
past its window is counted in ``count_429`` and, with ``enforce_rate_limits``,
answered 429 with ``retry_after`` and a ``Via`` header.

Sharding: ``GET /gateway/bot`` answers ``recommended_shards`` and a session start
limit; the gateway sends each guild's events on its shard's session (see
``discord_gateway``).

Module layout: payload builders in ``discord_payloads``, the websocket in
``discord_gateway``, recording / rate limits in ``discord_http``, application
commands in ``discord_interactions``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import discord
import yarl
from aiohttp import web

from tests.fakes import discord_payloads as p
from tests.fakes.discord_gateway import (
    DIRECT_MESSAGES,
    GUILD_MESSAGES,
    MESSAGE_CONTENT,
    FakeGateway,
    shard_of,
)
from tests.fakes.discord_http import (
    API,
    BODY,
    RestCall,
    RestPlumbing,
    content_error,
    error_response,
    json_response,
    rate_limited,
)
from tests.fakes.discord_interactions import FakeInteraction, InteractionRoutes
from tests.fakes.discord_payloads import FakeUser, Json

__all__ = [
    "DEAFENING",
    "MALFORMED",
    "FakeDiscord",
    "FakeFile",
    "FakeInteraction",
    "FakeMessage",
    "FakeUser",
    "RestCall",
    "ThreadLimit",
]

CdnFault = Literal["drop", "stall"]


@dataclass(slots=True)
class FakeFile:
    """An attachment and how the fake CDN serves it.

    ``declared_size``: the ``size`` the message says (default: the real one); the CDN
    streams ``data`` in chunks without a Content-Length, so only counting the bytes
    received catches a lie. ``fault``: "drop" closes the connection before answering,
    "stall" never sends a byte. ``url``: served from elsewhere (not fetched by the fake).
    """

    filename: str
    content_type: str
    data: bytes
    declared_size: int | None = None
    fault: CdnFault | None = None
    url: str | None = None


Files = list[tuple[str, str, bytes] | FakeFile]  # (filename, content type, data)
_CDN_CHUNK = 64 * 1024


def _without(key: str) -> Callable[[Json], Json]:
    return lambda payload: {k: v for k, v in payload.items() if k != key}


def _with(key: str, value: object) -> Callable[[Json], Json]:
    return lambda payload: {**payload, key: value}


_MESSAGE_FAULTS: dict[str, Callable[[Json], Json]] = {
    "missing_author": _without("author"),
    "mentions_as_string": lambda d: {**d, "mentions": d["content"]},
    "non_numeric_id": _with("id", "not-a-snowflake"),
    "missing_channel_id": _without("channel_id"),
    "member_without_flags": lambda d: {**d, "member": {"roles": []}},  # swallowed by discord.py
}
MALFORMED = (
    *_MESSAGE_FAULTS,
    "null_d",
    "interaction_without_data",
    "non_json",
    "json_array",
)
# The ones discord.py 2.7.1 raises out of ``Client.connect()`` on, ending the session
# for good (it swallows the other two); checked in test_fake_discord.
DEAFENING = frozenset(MALFORMED) - {"member_without_flags", "interaction_without_data"}


@dataclass(slots=True)
class ThreadLimit:
    """Discord's limit on opening threads in one channel: after ``burst`` threads it
    answers 429 with scope ``shared`` and a ``retry_after`` of minutes.

    Observed on the real platform: discord/discord-api-docs#7816 (``POST
    /channels/{id}/threads``, retry_after 219 s, "The rate limit scope was shared",
    lifted after ~145 s) and bots opening a thread per mention seeing 260–280 s after
    a few threads in a row. ``retry_after`` is what the 429s report; ``lasts_s``, how
    long the refusal really lasts (default: as reported), so a test never waits minutes.
    """

    burst: int = 3
    retry_after: float = 272.0
    lasts_s: float | None = None
    opened: dict[str, int] = field(default_factory=dict)  # channel -> threads this round
    until: dict[str, tuple[float, float]] = field(default_factory=dict)  # (lifts, reported)
    refused: int = 0

    def refuse(self, channel_id: str) -> float | None:
        """The retry_after to answer with, or None when the thread may be opened."""
        now = time.monotonic()
        lifts, reported = self.until.get(channel_id, (0.0, 0.0))
        if now >= lifts and channel_id in self.until:
            del self.until[channel_id]
            self.opened[channel_id] = 0
        if channel_id not in self.until and self.opened.get(channel_id, 0) >= self.burst:
            lasts = self.retry_after if self.lasts_s is None else self.lasts_s
            lifts, reported = now + lasts, now + self.retry_after
            self.until[channel_id] = (lifts, reported)
        if channel_id in self.until:
            self.refused += 1
            return round(max(0.001, reported - now), 3)
        self.opened[channel_id] = self.opened.get(channel_id, 0) + 1
        return None


@dataclass(slots=True)
class FakeMessage:
    """A message the fake knows; ``history`` holds every content it had, oldest first."""

    id: str
    channel_id: str
    guild_id: str | None
    author: FakeUser
    payload: Json
    history: list[str] = field(default_factory=list)
    bodies: list[Json] = field(default_factory=list)  # the bot's POST / PATCH bodies

    @property
    def content(self) -> str:
        return self.history[-1] if self.history else ""


class FakeDiscord(RestPlumbing, InteractionRoutes):
    """One guild (two text channels, three humans, another bot, roles) plus DMs;
    ``add_guild`` adds guilds, on a chosen shard if need be."""

    def __init__(
        self,
        *,
        token: str = "fake-bot-token",
        message_limit: int = 5,
        message_window_s: float = 5.0,
        default_limit: int = 50,
        enforce_rate_limits: bool = True,
        echo_own_messages: bool = True,
    ) -> None:
        RestPlumbing.__init__(
            self,
            message_limit=message_limit,
            message_window_s=message_window_s,
            default_limit=default_limit,
            enforce_rate_limits=enforce_rate_limits,
        )
        InteractionRoutes.__init__(self)
        self.token = token
        # Real Discord echoes the bot's own messages on the gateway; bots must ignore them.
        self.echo_own_messages = echo_own_messages
        self.snowflake = s = p.SnowflakeFactory()
        self.bot = FakeUser(s(), "groqbot", bot=True)
        self.app_id = self.bot.id
        self.guild_id = s()
        self.member_role, self.muted_role = s(), s()
        self.channel_id, self.other_channel_id = s(), s()
        self.alice = FakeUser(s(), "alice", roles=[self.member_role])
        self.bob = FakeUser(s(), "bob", roles=[self.member_role])
        self.carol = FakeUser(s(), "carol", roles=[self.muted_role])
        self.other_bot = FakeUser(s(), "otherbot", bot=True)
        self.users = [self.bot, self.alice, self.bob, self.carol, self.other_bot]
        self.channels = {self.channel_id: "general", self.other_channel_id: "random"}
        # Every text channel's guild, and every guild's name (``add_guild`` adds more).
        self.channel_guilds = {c: self.guild_id for c in self.channels}
        self.guild_names = {self.guild_id: "Test Guild"}
        # GET /gateway/bot's ``shards``: the number Discord recommends for the bot.
        self.recommended_shards = 1
        self.session_starts_total = 1000
        # IDENTIFYs allowed per 5 s; large bots are granted 16, so a test starting
        # several shards need not wait 5 s between them.
        self.max_concurrency = 16
        # GET /gateway/bot's ``url`` when not this fake's gateway (Discord names its own).
        self.gateway_bot_url: str | None = None
        self.threads: dict[str, Json] = {}
        self.dm_channels: dict[str, str] = {}  # user id -> DM channel id
        self.messages: dict[str, FakeMessage] = {}
        self.cdn: dict[str, FakeFile] = {}
        self.cdn_served: dict[str, int] = {}  # attachment id -> bytes written before the end
        self.cdn_delay_s = 0.0
        self.thread_limit: ThreadLimit | None = None  # see ``limit_threads``
        self._nonces: dict[tuple[str, str], str] = {}  # (channel, nonce) -> message id
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.gateway = FakeGateway(
            token=lambda: self.token,
            ready=self._ready_payload,
            guilds=lambda: [self._guild_payload(g) for g in self.guild_names],
            members_chunk=lambda gid: p.members_chunk(gid, self.users),
            notify=self._notify,
        )

    # ----- lifecycle -----

    async def start(self) -> FakeDiscord:
        app = web.Application(middlewares=[self.middleware])
        r = app.router
        r.add_get("/gateway", self.gateway.handle)
        r.add_get("/resume", self.gateway.handle)
        r.add_get("/cdn/{att_id}/{filename}", self._cdn)
        app_info = p.app_info(self.app_id, self.bot, self.carol)
        r.add_get(API + "/users/@me", lambda _: self._static(self._me()))
        r.add_get(API + "/oauth2/applications/@me", lambda _: self._static(app_info))
        r.add_get(API + "/gateway", lambda _: self._static({"url": self.ws_base}))
        r.add_get(API + "/gateway/bot", lambda _: self._static(self._gateway_bot()))
        r.add_get(API + "/channels/{channel_id}", self._get_channel)
        r.add_post(API + "/channels/{channel_id}/messages", self._create_message)
        r.add_get(API + "/channels/{channel_id}/messages/{message_id}", self._get_message)
        r.add_patch(API + "/channels/{channel_id}/messages/{message_id}", self._edit_message)
        r.add_post(API + "/channels/{channel_id}/typing", self._typing)
        r.add_post(
            API + "/channels/{channel_id}/messages/{message_id}/threads", self._create_thread
        )
        self.add_interaction_routes(r, API)
        r.add_route("*", API + "/{tail:.*}", self._unknown)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def aclose(self) -> None:
        await self.gateway.aclose()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def http_base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return self.http_base + API

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    def settings_overrides(self) -> dict[str, str]:
        """Settings that point the bot's Discord adapter here."""
        return {
            "discord_bot_token": self.token,
            "discord_api_base": self.api_base,
            "discord_gateway_url": self.ws_base,
        }

    @contextlib.contextmanager
    def patch(self) -> Iterator[None]:
        """Point discord.py's class-level URLs here; restore them on exit."""
        route, ws = discord.http.Route, discord.gateway.DiscordWebSocket
        saved = route.BASE, ws.DEFAULT_GATEWAY
        route.BASE, ws.DEFAULT_GATEWAY = self.api_base, yarl.URL(self.ws_base)
        try:
            yield
        finally:
            route.BASE, ws.DEFAULT_GATEWAY = saved

    # ----- waiting and views -----

    async def wait_for(self, predicate: Callable[[], object], *, within: float = 5.0) -> None:
        """Wait until ``predicate()`` is truthy, re-checked on every fake state change."""
        try:
            async with asyncio.timeout(within), self._cond:
                await self._cond.wait_for(predicate)
        except TimeoutError:
            recent = [f"{c.status} {c.method} {c.path}" for c in self.calls[-8:]]
            raise AssertionError(
                f"condition not met within {within}s; last calls: {recent}"
            ) from None

    async def drop_gateway(self, code: int = 4000) -> None:
        """Close the bot's gateway socket; it should RESUME (``gateway.resumes``)."""
        await self.gateway.drop(code)

    async def send_malformed(self, kind: str) -> None:
        """A gateway frame discord.py cannot parse (one of ``MALFORMED``), as a broken
        proxy, a Discord incident or an API change can deliver; discord.py raises out of
        ``Client.connect()`` on most of them and stays disconnected."""
        payload = p.message(
            message_id=self.snowflake(),
            channel_id=self.channel_id,
            author=self.alice,
            content=f"{self.bot.mention} broken",
            guild_id=self.guild_id,
            mentions=[self.bot],
        )
        payload["member"] = self.alice.member(with_user=False)
        if kind == "non_json":
            await self.gateway.send_raw('{"op": 0, "t": "MESSAGE_CREATE", "d": {')
        elif kind == "json_array":
            await self.gateway.send_raw("[0, 1, 2]")
        elif kind == "null_d":
            await self.gateway.dispatch("MESSAGE_CREATE", None)
        elif kind == "interaction_without_data":
            await self.send_interaction_without_data()
        elif kind in _MESSAGE_FAULTS:
            await self.gateway.dispatch("MESSAGE_CREATE", _MESSAGE_FAULTS[kind](payload))
        else:
            raise ValueError(f"unknown malformed payload {kind!r}; one of {MALFORMED}")

    def limit_threads(
        self, burst: int = 3, *, retry_after: float = 272.0, lasts_s: float | None = None
    ) -> ThreadLimit:
        """Refuse thread creation in a channel after ``burst`` threads (``ThreadLimit``)."""
        self.thread_limit = ThreadLimit(burst, retry_after, lasts_s)
        return self.thread_limit

    def channel_messages(self, channel_id: str) -> list[FakeMessage]:
        return [m for m in self.messages.values() if m.channel_id == channel_id]

    def bot_messages(self, channel_id: str | None = None) -> list[FakeMessage]:
        """The bot's messages (in creation order), optionally in one channel or thread."""
        mine = (m for m in self.messages.values() if m.author is self.bot)
        return [m for m in mine if channel_id is None or m.channel_id == channel_id]

    def final_content(self, message_id: str) -> str:
        return self.messages[message_id].content

    def add_guild(self, name: str, *, shard: tuple[int, int] | None = None) -> tuple[str, str]:
        """Another guild with one text channel ("general"), the same members and roles;
        with ``shard=(i, n)`` its id is one Discord routes to shard i of n. Returns
        (guild id, channel id). Add guilds before the bot connects: no GUILD_CREATE is
        sent for a guild added later."""
        guild_id = self.snowflake()
        if shard is not None:
            shard_id, count = shard
            ms, low = int(guild_id) >> 22, int(guild_id) & 0x3FFFFF
            ms += (shard_id - ms) % count  # the timestamp bits decide the shard
            guild_id = str((ms << 22) | low)
            assert shard_of(guild_id, count) == shard_id
        channel_id = self.snowflake()
        self.guild_names[guild_id] = name
        self.channels[channel_id] = "general"
        self.channel_guilds[channel_id] = guild_id
        return guild_id, channel_id

    def add_channel(self, name: str, guild_id: str | None = None) -> str:
        """Another text channel of ``guild_id`` (the main guild by default); its id.
        Add channels before the bot connects: they are sent in GUILD_CREATE."""
        channel_id = self.snowflake()
        self.channels[channel_id] = name
        self.channel_guilds[channel_id] = guild_id or self.guild_id
        return channel_id

    def dm_channel_id(self, user: FakeUser) -> str:
        return self.dm_channels.setdefault(user.id, self.snowflake())

    # ----- event injection -----

    async def send_message(
        self,
        content: str,
        *,
        author: FakeUser | None = None,
        channel_id: str | None = None,
        mention: bool = False,
        reply_to: str | None = None,
        attachments: Files | None = None,
    ) -> FakeMessage:
        """A guild (or thread) MESSAGE_CREATE; ``mention`` prefixes ``<@bot>``."""
        author = author or self.alice
        mentions = [self.bot] if mention else []
        if mention:
            content = f"{self.bot.mention} {content}"
        ref = self.messages[reply_to] if reply_to else None
        if ref is not None and ref.author.id != author.id and ref.author not in mentions:
            mentions.append(ref.author)  # Discord pings the replied-to author by default
        channel_id = channel_id or self.channel_id
        files = [self._attachment(a) for a in attachments or []]
        found = self._guild_of(channel_id)
        guild_id = found if isinstance(found, str) else self.guild_id
        msg = self._store(channel_id, guild_id, author, content, mentions, ref, files)
        await self._dispatch_message("MESSAGE_CREATE", msg)
        return msg

    async def send_dm(
        self, content: str, *, author: FakeUser | None = None, attachments: Files | None = None
    ) -> FakeMessage:
        """A DM MESSAGE_CREATE (no guild_id, no member)."""
        author = author or self.alice
        files = [self._attachment(a) for a in attachments or []]
        msg = self._store(self.dm_channel_id(author), None, author, content, [], None, files)
        await self._dispatch_message("MESSAGE_CREATE", msg)
        return msg

    def _attachment(self, file: tuple[str, str, bytes] | FakeFile) -> Json:
        f = file if isinstance(file, FakeFile) else FakeFile(*file)
        att_id = self.snowflake()
        self.cdn[att_id] = f
        url = f.url or f"{self.http_base}/cdn/{att_id}/{f.filename}"
        size = len(f.data) if f.declared_size is None else f.declared_size
        return p.attachment(att_id, f.filename, f.content_type, size, url)

    def _store(
        self,
        channel_id: str,
        guild_id: str | None,
        author: FakeUser,
        content: str,
        mentions: list[FakeUser],
        ref: FakeMessage | None,
        attachments: list[Json] | None = None,
    ) -> FakeMessage:
        mid = self.snowflake()
        payload = p.message(
            message_id=mid,
            channel_id=channel_id,
            author=author,
            content=content,
            guild_id=guild_id,
            mentions=mentions,
            reference=ref.payload if ref else None,
            attachments=attachments,
        )
        msg = FakeMessage(mid, channel_id, guild_id, author, payload, [content])
        self.messages[mid] = msg
        return msg

    async def _dispatch_message(self, event: str, msg: FakeMessage) -> None:
        """Dispatch with the intent filtering and content blanking real Discord applies."""
        gw = self.gateway
        if not gw.has_intent(DIRECT_MESSAGES if msg.guild_id is None else GUILD_MESSAGES):
            return
        data = dict(msg.payload, content=msg.content)
        if msg.guild_id is not None:
            data["member"] = msg.author.member(with_user=False)
        mentioned = any(u["id"] == self.bot.id for u in data["mentions"])
        visible = msg.guild_id is None or msg.author is self.bot or mentioned
        if not gw.has_intent(MESSAGE_CONTENT) and not visible:
            data.update(content="", embeds=[], attachments=[], components=[])
        await gw.dispatch(event, data)

    # ----- REST handlers -----

    async def _static(self, data: Json) -> web.Response:
        return json_response(data)

    def _me(self) -> Json:
        return {**self.bot.payload(), "verified": True, "mfa_enabled": False, "flags": 0}

    async def _unknown(self, request: web.Request) -> web.Response:
        return error_response(404, 0, f"404: Not Found ({request.method} {request.path})")

    async def _typing(self, _: web.Request) -> web.Response:
        return web.Response(status=204)

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        att_id = request.match_info["att_id"]
        found = self.cdn.get(att_id)
        if found is None:
            return web.Response(status=404)
        await asyncio.sleep(self.cdn_delay_s)  # a slow download, to test ordering
        if found.fault == "stall":
            await asyncio.sleep(3600)
        if found.fault == "drop":
            if request.transport is not None:
                request.transport.close()  # the client sees the connection end, no answer
            return web.Response(status=500)
        response = web.StreamResponse(headers={"Content-Type": found.content_type})
        response.enable_chunked_encoding()  # no Content-Length: the size is only in the bytes
        await response.prepare(request)
        self.cdn_served[att_id] = 0
        for start in range(0, len(found.data), _CDN_CHUNK):
            chunk = found.data[start : start + _CDN_CHUNK]
            try:
                await response.write(chunk)
            except ConnectionError:
                return response  # the client stopped reading
            self.cdn_served[att_id] += len(chunk)
        await response.write_eof()
        return response

    def _guild_of(self, channel_id: str) -> str | bool | None:
        """The channel's guild id, None for a DM channel, False when unknown."""
        if channel_id in self.threads:
            return str(self.threads[channel_id]["guild_id"])
        if channel_id in self.channels:
            return self.channel_guilds[channel_id]
        return None if channel_id in self.dm_channels.values() else False

    async def _get_channel(self, request: web.Request) -> web.Response:
        cid = request.match_info["channel_id"]
        if cid in self.threads:
            return json_response(self.threads[cid])
        if cid in self.channels:
            guild_id = self.channel_guilds[cid]
            return json_response(p.text_channel(cid, self.channels[cid], guild_id))
        for user in self.users:
            if self.dm_channels.get(user.id) == cid:
                return json_response(p.dm_channel(cid, user))
        return error_response(404, 10003, "Unknown Channel")

    async def _create_message(self, request: web.Request) -> web.Response:
        channel_id = request.match_info["channel_id"]
        body: Json = request[BODY] or {}
        guild_id = self._guild_of(channel_id)
        if guild_id is False:
            return error_response(404, 10003, "Unknown Channel")
        if (error := content_error(body)) is not None:
            return error
        # enforce_nonce: "If another message was created by the same author with the same
        # nonce, that message will be returned and no new message will be created."
        nonce = str(body.get("nonce")) if body.get("enforce_nonce") and body.get("nonce") else None
        if nonce is not None and (channel_id, nonce) in self._nonces:
            return json_response(self.messages[self._nonces[channel_id, nonce]].payload)
        ref_id = (body.get("message_reference") or {}).get("message_id")
        ref = self.messages.get(str(ref_id)) if ref_id else None
        content = body.get("content") or ""
        msg = self._store(
            channel_id, str(guild_id) if guild_id else None, self.bot, content, [], ref
        )
        msg.bodies.append(body)
        if nonce is not None:
            self._nonces[channel_id, nonce] = msg.id
        if self.echo_own_messages:
            await self._dispatch_message("MESSAGE_CREATE", msg)
        return json_response(msg.payload)

    def _find_message(self, request: web.Request) -> FakeMessage | None:
        msg = self.messages.get(request.match_info["message_id"])
        return msg if msg and msg.channel_id == request.match_info["channel_id"] else None

    async def _get_message(self, request: web.Request) -> web.Response:
        msg = self._find_message(request)
        if msg is None:
            return error_response(404, 10008, "Unknown Message")
        return json_response(dict(msg.payload, content=msg.content))

    async def _edit_message(self, request: web.Request) -> web.Response:
        msg = self._find_message(request)
        if msg is None:
            return error_response(404, 10008, "Unknown Message")
        if msg.author is not self.bot:
            return error_response(403, 50005, "Cannot edit a message authored by another user")
        body: Json = request[BODY] or {}
        if "content" in body and (error := content_error(body)) is not None:
            return error
        msg.bodies.append(body)
        if "content" in body:
            msg.history.append(body["content"] or "")
        msg.payload = dict(msg.payload, content=msg.content, edited_timestamp=p.timestamp())
        if self.echo_own_messages:
            await self._dispatch_message("MESSAGE_UPDATE", msg)
        return json_response(msg.payload)

    async def _create_thread(self, request: web.Request) -> web.Response:
        channel_id, message_id = request.match_info["channel_id"], request.match_info["message_id"]
        if channel_id not in self.channels or message_id not in self.messages:
            return error_response(404, 10008, "Unknown Message")
        if message_id in self.threads:
            return error_response(400, 160004, "A thread has already been created for this message")
        limit = self.thread_limit
        if limit is not None and (retry_after := limit.refuse(channel_id)) is not None:
            return rate_limited(retry_after, {}, scope="shared")
        body: Json = request[BODY] or {}
        # A thread started from a message has the message's id, as on real Discord.
        data = p.thread(
            thread_id=message_id,
            guild_id=self.channel_guilds[channel_id],
            parent_id=channel_id,
            owner_id=self.bot.id,
            name=str(body.get("name") or "thread")[:100],
            auto_archive_duration=int(body.get("auto_archive_duration") or 1440),
        )
        self.threads[message_id] = data
        # Without THREAD_CREATE discord.py never caches the thread and later messages in it
        # arrive with a PartialMessageable channel.
        member = p.thread_member(message_id, self.bot.id)
        await self.gateway.dispatch("THREAD_CREATE", dict(data, newly_created=True, member=member))
        return json_response(data, 201)

    # ----- gateway payloads -----

    def _ready_payload(self, session_id: str) -> Json:
        return p.ready(
            user=self._me(),
            session_id=session_id,
            resume_url=f"ws://127.0.0.1:{self.port}/resume",
            guild_ids=[self.guild_id],
            app_id=self.app_id,
        )

    def _guild_payload(self, guild_id: str | None = None) -> Json:
        """GUILD_CREATE of ``guild_id`` (default: the main guild)."""
        guild_id = guild_id or self.guild_id
        roles = {guild_id: "@everyone", self.member_role: "member", self.muted_role: "muted"}
        return p.guild_create(
            guild_id,
            name=self.guild_names[guild_id],
            channels={c: n for c, n in self.channels.items() if self.channel_guilds[c] == guild_id},
            members=self.users,
            roles=roles,
            threads=[t for t in self.threads.values() if t["guild_id"] == guild_id],
        )

    def _gateway_bot(self) -> Json:
        """GET /gateway/bot (docs: topics/gateway#get-gateway-bot): the url, the
        recommended shard count and the session start limit; ``remaining`` falls by one
        per IDENTIFY, ``reset_after`` is in milliseconds, ``max_concurrency`` is the
        IDENTIFYs allowed per 5 s."""
        used = self.gateway.identifies
        return {
            "url": self.gateway_bot_url or self.ws_base,
            "shards": self.recommended_shards,
            "session_start_limit": {
                "total": self.session_starts_total,
                "remaining": max(0, self.session_starts_total - used),
                "reset_after": 14_400_000,
                "max_concurrency": self.max_concurrency,
            },
        }
