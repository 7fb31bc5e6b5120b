"""The fake Slack's Socket Mode side: ``apps.connections.open``, the websocket, acks.

Envelopes go to the newest open socket. Every ack is recorded with its latency; an
``events_api`` envelope not acked within ``redeliver_after_s`` (3 s, as Slack) is
sent again as a new envelope with ``retry_attempt + 1`` and ``retry_reason:
"timeout"``, up to ``max_redeliveries`` times (``redeliver = False`` turns it off).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes import slack_payloads as p
from tests.fakes.slack_payloads import Json

__all__ = ["Ack", "Envelope", "SocketMode"]


@dataclass(slots=True)
class Ack:
    """The app's answer to one envelope: its optional payload and how long it took."""

    envelope_id: str
    payload: Json | None
    latency_s: float


@dataclass(slots=True)
class Envelope:
    """One envelope sent to the app."""

    envelope_id: str
    kind: str
    payload: Json
    retry_attempt: int
    sent_at: float  # real monotonic time, for ack latency
    ack: Ack | None = None
    # Its redelivery timer has run (and sent the redelivery, if one was due): nothing
    # but that timer ever redelivers it. False too when redelivery is off.
    redelivery_checked: bool = False

    @property
    def event_id(self) -> str | None:
        value = self.payload.get("event_id")
        return str(value) if value else None


class SocketMode:
    """Mixin: the Socket Mode endpoint. ``FakeSlack`` supplies ids, port and notify."""

    app_id: str
    port: int
    wait_for: Callable[..., Coroutine[Any, Any, Any]]

    def _init_socket(self) -> None:
        self.envelopes: dict[str, Envelope] = {}
        self.acks: list[Ack] = []
        self.frames_in: list[Json] = []
        self.connections_opened = 0  # apps.connections.open calls answered
        self.socket_connects = 0
        self.sockets: list[web.WebSocketResponse] = []
        self.redeliver = True
        self.redeliver_after_s = 3.0
        # False: the socket never answers the app's close frame (a peer or proxy that
        # drops it); the app's close handshake then waits its own timeout (aiohttp's
        # ws_close, 10 s by default) unless it bounds it.
        self.answer_close = True
        self.max_redeliveries = 3
        self._tasks: set[asyncio.Task[None]] = set()

    async def _notify(self) -> None:
        raise NotImplementedError

    # ----- handshake -----

    def _connections_open(self, params: Json) -> Json:
        self.connections_opened += 1
        ticket = uuid.uuid4().hex
        url = f"ws://127.0.0.1:{self.port}/link/?ticket={ticket}&app_id={self.app_id}"
        return {"ok": True, "url": url}

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, autoclose=self.answer_close)
        await ws.prepare(request)
        self.sockets.append(ws)
        self.socket_connects += 1
        await ws.send_json(p.hello(self.app_id, len(self.sockets)))
        await self._notify()
        try:
            while True:
                frame = await ws.receive()
                if frame.type == WSMsgType.TEXT:
                    await self._on_frame(json.loads(frame.data))
                elif frame.type == WSMsgType.CLOSE and not self.answer_close:
                    await asyncio.sleep(30)  # say nothing, keep the connection open
                elif frame.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                    break
        finally:
            self.sockets.remove(ws)
            await self._notify()
        return ws

    async def _on_frame(self, frame: Json) -> None:
        self.frames_in.append(frame)
        envelope = self.envelopes.get(str(frame.get("envelope_id")))
        if envelope is not None and envelope.ack is None:
            latency = time.monotonic() - envelope.sent_at
            envelope.ack = Ack(envelope.envelope_id, frame.get("payload"), latency)
            self.acks.append(envelope.ack)
        await self._notify()

    # ----- sending -----

    @property
    def connected(self) -> bool:
        return any(not ws.closed for ws in self.sockets)

    async def send_envelope(
        self, kind: str, payload: Json, *, retry_attempt: int = 0, retry_reason: str = ""
    ) -> Envelope:
        """Send one envelope on the newest socket (waiting up to 5 s for one)."""
        await self.wait_for(lambda: self.connected, what="a Socket Mode connection")
        frame = p.envelope(kind, payload, retry_attempt=retry_attempt, retry_reason=retry_reason)
        envelope = Envelope(
            frame["envelope_id"], kind, payload, retry_attempt, sent_at=time.monotonic()
        )
        self.envelopes[envelope.envelope_id] = envelope
        ws = [s for s in self.sockets if not s.closed][-1]
        await ws.send_json(frame)
        if kind == "events_api" and self.redeliver:
            self._spawn(self._redeliver_later(envelope))
        await self._notify()
        return envelope

    async def _redeliver_later(self, envelope: Envelope) -> None:
        await asyncio.sleep(self.redeliver_after_s)
        if envelope.ack is None and envelope.retry_attempt < self.max_redeliveries:
            await self.send_envelope(
                envelope.kind,
                envelope.payload,
                retry_attempt=envelope.retry_attempt + 1,
                retry_reason="timeout",
            )
        envelope.redelivery_checked = True
        await self._notify()

    def deliveries_of(self, event_id: str) -> list[Envelope]:
        """Every envelope (first delivery and redeliveries) carrying ``event_id``."""
        return [e for e in self.envelopes.values() if e.event_id == event_id]

    async def send_disconnect(self, reason: str = "refresh_requested") -> None:
        """Ask the app to reconnect, as Slack does before refreshing a socket."""
        ws = [s for s in self.sockets if not s.closed][-1]
        await ws.send_json(p.disconnect(reason))

    async def drop_sockets(self) -> None:
        """Close every socket from the server side (the app should reconnect)."""
        for ws in list(self.sockets):
            await ws.close(code=1001, message=b"going away")

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _stop_socket_mode(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.drop_sockets()
