"""The fake Discord gateway: the websocket sessions that real discord.py drives.

HELLO, heartbeat ACK, IDENTIFY → READY + GUILD_CREATE, RESUME → replay of every
dispatch after the client's sequence number + RESUMED, REQUEST_GUILD_MEMBERS →
GUILD_MEMBERS_CHUNK. Every dispatch is logged by sequence number so a dropped
socket loses nothing: the client resumes and the log fills the gap.

Sharding, per https://discord.com/developers/docs/events/gateway#sharding: IDENTIFY
may carry ``shard: [shard_id, num_shards]``; each shard is its own session (own
session id, sequence numbers and replay log). A guild's events go only to the shard
with ``shard_id == (guild_id >> 22) % num_shards`` ("Guilds that are not on your
shard will not appear … you won't receive any events for guilds not on your
shard"), DMs only to shard 0, and READY lists only the shard's guilds. A shard id
outside ``0 <= id < num_shards`` is closed with 4010 Invalid shard; a session that
would hold more than ``max_guilds_per_session`` guilds with 4011 Sharding required
(docs: topics/opcodes-and-status-codes#gateway-gateway-close-event-codes). Without
``shard`` the session is shard [0, 1], as Discord treats an unsharded connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

__all__ = [
    "DIRECT_MESSAGES",
    "GUILD_MESSAGES",
    "MESSAGE_CONTENT",
    "Delivery",
    "FakeGateway",
    "shard_of",
]

Json = dict[str, Any]
GUILD_MEMBERS = 1 << 1
GUILD_MESSAGES = 1 << 9
DIRECT_MESSAGES = 1 << 12
MESSAGE_CONTENT = 1 << 15
PRIVILEGED = GUILD_MEMBERS | MESSAGE_CONTENT | (1 << 8)


def shard_of(guild_id: str | int, num_shards: int) -> int:
    """The shard that receives a guild's events (Discord's documented formula)."""
    return (int(guild_id) >> 22) % num_shards


@dataclass(frozen=True, slots=True)
class Delivery:
    """One dispatch as sent: on which shard's session, what, for which guild."""

    shard: int
    event: str
    guild_id: str | None


@dataclass(slots=True)
class _Session:
    """One identified shard: its session id, sequence, replay log and live socket."""

    shard: tuple[int, int]
    session_id: str
    live: web.WebSocketResponse | None
    seq: int = 0
    log: list[Json] = field(default_factory=list)

    def owns(self, guild_id: str | None) -> bool:
        if guild_id is None:
            return self.shard[0] == 0  # "DMs will only be sent to shard_id 0"
        return shard_of(guild_id, self.shard[1]) == self.shard[0]


# About the session itself, sent on whichever shard it is: no guild's, nor a DM's.
_SESSION_EVENTS = frozenset({"READY", "RESUMED"})


def _guild_of(event: str, data: Any) -> str | None:
    """The guild an event belongs to (which decides its shard); None for DMs."""
    if not isinstance(data, dict):
        return None
    if event == "GUILD_CREATE":
        return str(data["id"])
    guild_id = data.get("guild_id")
    return str(guild_id) if guild_id else None


class FakeGateway:
    """Gateway state shared by every socket of one fake Discord.

    ``ready`` builds READY's ``d`` given the new session id; ``guilds`` builds the
    GUILD_CREATE payloads; ``notify`` wakes ``FakeDiscord.wait_for`` waiters. The
    single-session views (``session_id``, ``seq``, ``connected``, ``drop``…) are about
    shard 0, which is the whole bot when it does not shard.
    """

    def __init__(
        self,
        *,
        token: Callable[[], str],
        ready: Callable[[str], Json],
        guilds: Callable[[], list[Json]],
        members_chunk: Callable[[str], Json],
        notify: Callable[[], Awaitable[None]],
    ) -> None:
        self._token = token
        self._ready = ready
        self._guilds = guilds
        self._members_chunk = members_chunk
        self._notify = notify
        self._lock = asyncio.Lock()
        self._sockets: set[web.WebSocketResponse] = set()
        self._sessions: dict[int, _Session] = {}  # by shard id: the latest IDENTIFY of each
        self.heartbeat_ms = 41_250
        # False emulates a bot whose privileged intents are off in the developer portal.
        self.privileged_intents_enabled = True
        # False: IDENTIFY succeeds but message text stays blanked as if the MESSAGE
        # CONTENT intent had not been granted (what a bot sees when it lacks the intent).
        self.message_content_granted = True
        # True: websocket upgrades are answered 503 (a gateway that cannot be reached).
        self.refuse_connections = False
        # A session that would hold more guilds is closed with 4011 (Discord: 2,500).
        self.max_guilds_per_session: int | None = None
        # Raw frames sent right after READY / GUILD_CREATE of every new session.
        self.after_identify: list[str] = []
        self.intents: int | None = None
        self.connect_paths: list[str] = []
        self.identifies = 0
        self.identified_shards: list[Any] = []  # each IDENTIFY's ``shard`` field (or None)
        self.deliveries: list[Delivery] = []
        self.undelivered: list[Delivery] = []  # no session owned the guild (its shard is off)
        self.resumes = 0
        self.heartbeats = 0
        self.errors: list[str] = []  # bugs in the fake's frame handling

    @property
    def session_id(self) -> str | None:
        session = self._sessions.get(0)
        return session.session_id if session else None

    @property
    def seq(self) -> int:
        session = self._sessions.get(0)
        return session.seq if session else 0

    @property
    def connected(self) -> bool:
        """True while shard 0's identified or resumed socket is receiving dispatches."""
        return self.shard_connected(0)

    def shard_connected(self, shard_id: int) -> bool:
        session = self._sessions.get(shard_id)
        return session is not None and session.live is not None and not session.live.closed

    def shards_delivered(self, guild_id: str | None) -> set[int]:
        """The shards whose sessions received events of ``guild_id`` (None: DMs)."""
        return {
            d.shard
            for d in self.deliveries
            if d.guild_id == guild_id and d.event not in _SESSION_EVENTS
        }

    def has_intent(self, bit: int) -> bool:
        if bit == MESSAGE_CONTENT and not self.message_content_granted:
            return False
        return self.intents is not None and bool(self.intents & bit)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """aiohttp handler for ``/gateway`` and ``/resume`` (told apart by path)."""
        if self.refuse_connections:
            self.connect_paths.append(f"refused {request.path}")
            return web.Response(status=503, text="upstream connect error")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.add(ws)
        self.connect_paths.append(request.path)
        try:
            await ws.send_str(
                json.dumps({"op": 10, "d": {"heartbeat_interval": self.heartbeat_ms}})
            )
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    try:
                        await self._on_frame(ws, json.loads(msg.data))
                    except Exception as exc:
                        self.errors.append(repr(exc))
                        raise
        finally:
            self._sockets.discard(ws)
            for session in self._sessions.values():
                if session.live is ws:
                    session.live = None
        return ws

    async def _on_frame(self, ws: web.WebSocketResponse, frame: Json) -> None:
        op, data = frame.get("op"), frame.get("d") or {}
        if op == 1:
            self.heartbeats += 1
            await ws.send_str(json.dumps({"op": 11}))
        elif op == 2:
            await self._identify(ws, data)
        elif op == 6:
            await self._resume(ws, data)
        elif op == 8:
            await self.dispatch("GUILD_MEMBERS_CHUNK", self._members_chunk(str(data["guild_id"])))
        await self._notify()

    async def _identify(self, ws: web.WebSocketResponse, data: Json) -> None:
        if data.get("token") != self._token():
            await ws.close(code=4004, message=b"Authentication failed.")
            return
        intents = int(data.get("intents", 0))
        if intents & PRIVILEGED and not self.privileged_intents_enabled:
            await ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        raw_shard = data.get("shard")
        self.identified_shards.append(raw_shard)
        shard = _valid_shard(raw_shard)
        if shard is None:
            await ws.close(code=4010, message=b"Invalid shard.")
            return
        guilds = [g for g in self._guilds() if shard_of(g["id"], shard[1]) == shard[0]]
        limit = self.max_guilds_per_session
        if limit is not None and len(guilds) > limit:
            await ws.close(code=4011, message=b"Sharding required.")
            return
        async with self._lock:
            self.identifies += 1
            self.intents = intents
            session = _Session(shard, uuid.uuid4().hex, ws)
            self._sessions[shard[0]] = session
        ready = self._ready(session.session_id)
        ready["guilds"] = [{"id": g["id"], "unavailable": True} for g in guilds]
        if raw_shard is not None:
            ready["shard"] = list(shard)
        await self._send(session, "READY", ready)
        for guild in guilds:
            await self._send(session, "GUILD_CREATE", guild)
        for text in self.after_identify:
            await self._send_text(session, text)

    async def _resume(self, ws: web.WebSocketResponse, data: Json) -> None:
        found = [s for s in self._sessions.values() if s.session_id == data.get("session_id")]
        if data.get("token") != self._token() or not found:
            await ws.send_str(json.dumps({"op": 9, "d": False}))
            return
        session = found[0]
        since = int(data.get("seq") or 0)
        async with self._lock:
            # Replay under the lock so no dispatch can slip between replay and going live.
            for frame in session.log:
                if frame["s"] > since:
                    await ws.send_str(json.dumps(frame))
            session.live = ws
            self.resumes += 1
        await self._send(session, "RESUMED", {})

    async def dispatch(self, event: str, data: Any) -> int:
        """Send a dispatch on the session of the shard its guild belongs to (shard 0 for
        DMs), or keep it for that session's RESUME; return ``s`` (0: no such session)."""
        guild_id = _guild_of(event, data)
        owner = next((s for s in self._sessions.values() if s.owns(guild_id)), None)
        if owner is None:
            self.undelivered.append(Delivery(-1, event, guild_id))
            await self._notify()
            return 0
        return await self._send(owner, event, data)

    async def _send(self, session: _Session, event: str, data: Any) -> int:
        guild_id = _guild_of(event, data)
        async with self._lock:
            session.seq += 1
            frame = {"op": 0, "t": event, "s": session.seq, "d": data}
            session.log.append(frame)
            self.deliveries.append(Delivery(session.shard[0], event, guild_id))
            live = session.live
            if live is not None and not live.closed:
                try:
                    await live.send_str(json.dumps(frame))
                except ConnectionError:
                    # The socket died under us; the client will RESUME and get the replay.
                    session.live = None
            seq = session.seq
        await self._notify()
        return seq

    async def _send_text(self, session: _Session | None, text: str) -> None:
        async with self._lock:
            if session is not None and session.live is not None and not session.live.closed:
                await session.live.send_str(text)

    async def send_raw(self, text: str) -> None:
        """Send ``text`` as it is, as one TEXT frame on shard 0's socket (a broken frame)."""
        await self._send_text(self._sessions.get(0), text)

    async def send_op(self, op: int, data: Any = None) -> None:
        """Send a raw non-dispatch frame (7 RECONNECT, 9 INVALID_SESSION…) on shard 0."""
        await self._send_text(self._sessions.get(0), json.dumps({"op": op, "d": data}))

    async def drop(self, code: int = 4000, *, shard: int = 0) -> None:
        """Close a shard's live socket with ``code``; dispatches are logged until the
        client resumes."""
        async with self._lock:
            session = self._sessions.get(shard)
            live = session.live if session else None
            if session is not None:
                session.live = None
        if live is not None:
            await live.close(code=code, message=b"dropped by test")
        await self._notify()

    async def aclose(self) -> None:
        """Close every socket (1001 going away)."""
        for session in self._sessions.values():
            session.live = None
        for ws in list(self._sockets):
            with contextlib.suppress(ConnectionError):
                await ws.close(code=1001, message=b"server shutdown")


def _valid_shard(raw: Any) -> tuple[int, int] | None:
    """IDENTIFY's ``shard``: absent is [0, 1]; else a pair with 0 <= id < count."""
    if raw is None:
        return (0, 1)
    if not isinstance(raw, list) or len(raw) != 2 or not all(isinstance(x, int) for x in raw):
        return None
    shard_id, count = raw
    return (shard_id, count) if 0 <= shard_id < count else None
