"""The floor bot of ``bench_cpu.py``: the least CPU any Discord bot must spend per reply.

A minimal discord.py client that, on a mention, starts a thread on the message while it
streams the completion with plain httpx or aiohttp (raw chunks split on the SSE event
boundary, ``json.loads`` per event), posts the answer
in the thread at the first token, edits it at most once per second with what has
arrived, and puts the final text up at the end. Its reader never waits for Discord: a
post or edit runs as its own task, and the next edit goes only once the last one is
done. No history, storage, quota, retries or formatting: whatever the real bot spends
beyond this is the price of its features and its overheads.

Run by the benchmark as its own process (it imports nothing of the project, so its
memory is discord.py's, httpx's and the interpreter's):
``python benchmarks/floor_bot.py API_BASE GATEWAY_URL TOKEN LLM_BASE_URL LLM_KEY MODEL
CLIENT``. CLIENT is ``httpx`` (httpx's own transport: httpcore, h11, anyio) or
``aiohttp``: the client discord.py already loads, as the bot's transport does
(``bot/llm/transport.py``), which reads a stream for less.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import httpx
import yarl

EDIT_EVERY_S = 1.0


class FloorBot(discord.Client):
    """Answers every mention by streaming the completion into a thread."""

    def __init__(self, llm_base: str, llm_key: str, model: str, client: str) -> None:
        intents = discord.Intents.default()
        intents.message_content = True
        super().__init__(intents=intents)
        self._llm_base, self._llm_key, self._model = llm_base, llm_key, model
        self._client = client
        self._llm: httpx.AsyncClient | None = None
        self._session: aiohttp.ClientSession | None = None

    async def setup_hook(self) -> None:
        if self._client == "aiohttp":
            connector = aiohttp.TCPConnector(limit=0)
            self._session = aiohttp.ClientSession(connector=connector)
        else:
            self._llm = httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=None))

    async def _chunks(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        """The response body as it arrives: raw chunks, split by the caller on the blank
        line that ends each SSE event (httpx's aiter_lines would decode and split line by
        line, at several times the cost)."""
        url = f"{self._llm_base}/chat/completions"
        headers = {"Authorization": f"Bearer {self._llm_key}"}
        if self._session is not None:
            async with self._session.post(url, json=body, headers=headers) as response:
                response.raise_for_status()
                async for chunk in response.content.iter_any():
                    yield chunk
            return
        assert self._llm is not None
        async with self._llm.stream("POST", url, json=body, headers=headers) as streamed:
            streamed.raise_for_status()
            async for chunk in streamed.aiter_raw():
                yield chunk

    async def on_message(self, message: discord.Message) -> None:
        if self.user is None or message.author == self.user or self.user not in message.mentions:
            return
        thread = asyncio.create_task(message.create_thread(name=message.content[:90] or "reply"))
        sent: discord.Message | None = None
        shown = ""

        async def publish(text: str) -> None:
            nonlocal sent, shown
            if sent is None:
                sent = await (await thread).send(text)
            else:
                await sent.edit(content=text)
            shown = text

        body: dict[str, Any] = {
            "model": self._model,
            "messages": [{"role": "user", "content": message.content}],
            "stream": True,
            "include_reasoning": False,
        }
        text, pending, last = "", None, -EDIT_EVERY_S
        buffer = b""
        async for chunk in self._chunks(body):
            *events, buffer = (buffer + chunk).split(b"\n\n")
            for event in events:
                if not event.startswith(b"data: ") or event == b"data: [DONE]":
                    continue
                choices = json.loads(event[6:]).get("choices")
                if choices:
                    text += choices[0].get("delta", {}).get("content") or ""
            now = time.monotonic()
            if text and now - last >= EDIT_EVERY_S and (pending is None or pending.done()):
                pending, last = asyncio.create_task(publish(text)), now
        if pending is not None:
            await pending
        if text != shown:
            await publish(text)
        thread.result()


def main() -> None:
    api_base, gateway, token, llm_base, llm_key, model, client = sys.argv[1:8]
    discord.http.Route.BASE = api_base.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway)
    FloorBot(llm_base, llm_key, model, client).run(token, log_handler=None)


if __name__ == "__main__":
    main()
