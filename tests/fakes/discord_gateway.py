"""The fake Discord gateway: one websocket session that real discord.py drives.

HELLO, heartbeat ACK, IDENTIFY → READY + GUILD_CREATE, RESUME → replay of every
dispatch after the client's sequence number + RESUMED, REQUEST_GUILD_MEMBERS →
GUILD_MEMBERS_CHUNK. Every dispatch is logged by sequence number so a dropped
socket loses nothing: the client resumes and the log fills the gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web

__all__ = ["DIRECT_MESSAGES", "GUILD_MESSAGES", "MESSAGE_CONTENT", "FakeGateway"]

Json = dict[str, Any]
GUILD_MEMBERS = 1 << 1
GUILD_MESSAGES = 1 << 9
DIRECT_MESSAGES = 1 << 12
MESSAGE_CONTENT = 1 << 15
PRIVILEGED = GUILD_MEMBERS | MESSAGE_CONTENT | (1 << 8)


class FakeGateway:
    """Gateway state shared by every socket of one fake Discord.

    ``ready`` builds READY's ``d`` given the new session id; ``guilds`` builds the
    GUILD_CREATE payloads; ``notify`` wakes ``FakeDiscord.wait_for`` waiters.
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
        self._live: web.WebSocketResponse | None = None
        self._log: list[Json] = []
        self.heartbeat_ms = 41_250
        # False emulates a bot whose privileged intents are off in the developer portal.
        self.privileged_intents_enabled = True
        # False: IDENTIFY succeeds but message text stays blanked as if the MESSAGE
        # CONTENT intent had not been granted (what a bot sees when it lacks the intent).
        self.message_content_granted = True
        # True: websocket upgrades are answered 503 (a gateway that cannot be reached).
        self.refuse_connections = False
        # Raw frames sent right after READY / GUILD_CREATE of every new session.
        self.after_identify: list[str] = []
        self.session_id: str | None = None
        self.seq = 0
        self.intents: int | None = None
        self.connect_paths: list[str] = []
        self.identifies = 0
        self.resumes = 0
        self.heartbeats = 0
        self.errors: list[str] = []  # bugs in the fake's frame handling

    @property
    def connected(self) -> bool:
        """True while an identified or resumed socket is receiving dispatches."""
        return self._live is not None and not self._live.closed

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
            if self._live is ws:
                self._live = None
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
        async with self._lock:
            self.identifies += 1
            self.intents = intents
            self.session_id = uuid.uuid4().hex
            self.seq = 0
            self._log.clear()
            self._live = ws
        await self.dispatch("READY", self._ready(self.session_id))
        for guild in self._guilds():
            await self.dispatch("GUILD_CREATE", guild)
        for text in self.after_identify:
            await self.send_raw(text)

    async def _resume(self, ws: web.WebSocketResponse, data: Json) -> None:
        if data.get("token") != self._token() or data.get("session_id") != self.session_id:
            await ws.send_str(json.dumps({"op": 9, "d": False}))
            return
        since = int(data.get("seq") or 0)
        async with self._lock:
            # Replay under the lock so no dispatch can slip between replay and going live.
            for frame in self._log:
                if frame["s"] > since:
                    await ws.send_str(json.dumps(frame))
            self._live = ws
            self.resumes += 1
        await self.dispatch("RESUMED", {})

    async def dispatch(self, event: str, data: Any) -> int:
        """Send a dispatch on the live socket (or keep it for the next RESUME); return ``s``."""
        async with self._lock:
            self.seq += 1
            frame = {"op": 0, "t": event, "s": self.seq, "d": data}
            self._log.append(frame)
            live = self._live
            if live is not None and not live.closed:
                try:
                    await live.send_str(json.dumps(frame))
                except ConnectionError:
                    # The socket died under us; the client will RESUME and get the replay.
                    self._live = None
            seq = self.seq
        await self._notify()
        return seq

    async def send_raw(self, text: str) -> None:
        """Send ``text`` as it is, as one TEXT frame on the live socket (a broken frame)."""
        async with self._lock:
            if self._live is not None and not self._live.closed:
                await self._live.send_str(text)

    async def send_op(self, op: int, data: Any = None) -> None:
        """Send a raw non-dispatch frame (7 RECONNECT, 9 INVALID_SESSION…) on the live socket."""
        async with self._lock:
            if self._live is not None and not self._live.closed:
                await self._live.send_str(json.dumps({"op": op, "d": data}))

    async def drop(self, code: int = 4000) -> None:
        """Close the live socket with ``code``; dispatches are logged until the client resumes."""
        async with self._lock:
            live, self._live = self._live, None
        if live is not None:
            await live.close(code=code, message=b"dropped by test")
        await self._notify()

    async def aclose(self) -> None:
        """Close every socket (1001 going away)."""
        self._live = None
        for ws in list(self._sockets):
            with contextlib.suppress(ConnectionError):
                await ws.close(code=1001, message=b"server shutdown")
