"""Hot-path CPU micro-benchmark (issue 14): µs of CPU per SSE event, per stage.

Replays a recorded Groq-style stream (a 200-word answer, 1 or 4 tokens per SSE event)
from a replay server in a child process, paced at ``--rate`` tokens/s per stream, to
``--concurrency`` streams at once, and measures this process's CPU time
(``time.process_time``: every thread, so the aiosqlite worker counts too):

- ``sse``: ``ChatStreamParser.feed`` over the recorded network reads, in memory;
- ``client``: ``CompletionsClient.stream`` over a real socket, every event consumed;
- ``floor``: bare httpx, ``json.loads`` per event (the least a bot can do);
- ``engine``: ``Engine.handle`` end to end (store, client, splitter) into an
  ``EditingSink`` over a ``RecordingSurface`` (1 edit/s, as Discord's floor bot).

Each stage runs ``--rounds`` times; the figures are medians of µs per event.
The client streams over its default transport (``bot.llm.transport.AiohttpTransport``);
``--transport httpcore`` puts httpx's own default under it instead, for comparison.

Run: ``.venv/bin/python benchmarks/bench_hotpath.py [--rounds 5] [--concurrency 20]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.app import open_runtime  # noqa: E402
from bot.llm.client import CompletionsClient  # noqa: E402
from bot.llm.sse import ChatStreamParser  # noqa: E402
from bot.ports import SystemClock  # noqa: E402
from bot.settings import Settings  # noqa: E402
from bot.streaming.editing_sink import EditingSink  # noqa: E402
from bot.types import (  # noqa: E402
    ChatMessage,
    ChatRequest,
    ConversationKey,
    Incoming,
    Platform,
    SurfaceLimits,
    UserRef,
)
from tests.fakes.surface import RecordingSurface  # noqa: E402

MODEL = "openai/gpt-oss-120b"
WORDS = 200
_VOCAB = [
    "the",
    "model",
    "streams",
    "a",
    "short",
    "answer",
    "about",
    "python",
    "asyncio",
    "and",
    "sockets",
    "in",
    "plain",
    "words",
]


def record(tokens_per_event: int) -> list[bytes]:
    """The recorded stream as the network reads that carry it: one SSE event each."""
    tokens = [" " + _VOCAB[i % len(_VOCAB)] for i in range(WORDS)]
    # Groq splits longer words into two tokens: ~1.3 tokens per word.
    tokens = [piece for t in tokens for piece in ((t[:3], t[3:]) if len(t) > 5 else (t,))]
    base = {
        "id": "chatcmpl-7f2d5c1e-0a4b-4a8e-9c3d-2b1e6f0a9d11",
        "object": "chat.completion.chunk",
        "created": 1733150000,
        "model": MODEL,
        "system_fingerprint": "fp_a1b2c3d4e5",
    }

    def event(delta: dict[str, object], finish: str | None = None, **extra: object) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + json.dumps({**base, "choices": [choice], **extra}).encode() + b"\n\n"

    reads = [event({"role": "assistant", "content": ""})]
    for i in range(0, len(tokens), tokens_per_event):
        reads.append(event({"content": "".join(tokens[i : i + tokens_per_event])}))
    usage = {
        "prompt_tokens": 40,
        "completion_tokens": len(tokens),
        "total_tokens": 40 + len(tokens),
    }
    reads.append(event({}, "stop", x_groq={"id": "req_01", "usage": usage}))
    reads.append(b"data: [DONE]\n\n")
    return reads


# ----- the replay server (child process) -----


def serve(rate: float) -> None:
    """Serve ``/models`` and the recorded streams on a free port (the user's text names
    one: ``tpe=4``)."""
    from aiohttp import web

    streams = {n: record(n) for n in (1, 4)}

    async def models(_: web.Request) -> web.Response:
        entry = {"id": MODEL, "object": "model", "owned_by": "bench", "context_window": 131072}
        return web.json_response({"object": "list", "data": [entry]})

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        tpe = int(body["messages"][-1]["content"].removeprefix("tpe="))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        gap = tpe / rate
        for chunk in streams[tpe]:
            await response.write(chunk)
            await asyncio.sleep(gap)
        await response.write_eof()
        return response

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/v1/models", models)
        app.router.add_post("/v1/chat/completions", chat)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(port, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


# ----- stages -----


def bench_sse(reads: list[bytes], rounds: int) -> list[float]:
    per_event: list[float] = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(50):
            parser = ChatStreamParser(model=MODEL)
            for chunk in reads:
                parser.feed(chunk)
            parser.finish()
        per_event.append((time.process_time() - start) / (50 * len(reads)) * 1e6)
    return per_event


Work = Callable[[int], Awaitable[None]]


async def _cpu_per_event(work: Work, concurrency: int, events: int) -> float:
    start = time.process_time()
    await asyncio.gather(*(work(i) for i in range(concurrency)))
    return (time.process_time() - start) / (concurrency * events) * 1e6


def _transport(name: str, max_connections: int) -> httpx.AsyncBaseTransport | None:
    """None: the client's own default (aiohttp); "httpcore": httpx's default transport."""
    if name == "default":
        return None
    limits = httpx.Limits(max_connections=max_connections)
    return httpx.AsyncHTTPTransport(limits=limits)


@asynccontextmanager
async def floor_stage(base_url: str, tpe: int, concurrency: int) -> AsyncIterator[Work]:
    """The least a bot can do: bare httpx, ``json.loads`` per event (issue 14's floor)."""
    limits = httpx.Limits(max_connections=concurrency + 2)
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as http:
        body = {"model": MODEL, "messages": [{"role": "user", "content": f"tpe={tpe}"}]}
        body["stream"] = True

        async def one(_: int) -> None:
            text: list[str] = []
            url = f"{base_url}/chat/completions"
            async with http.stream("POST", url, json=body) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        for choice in json.loads(line[6:])["choices"]:
                            text.append(choice["delta"].get("content") or "")

        yield one


@asynccontextmanager
async def client_stage(
    base_url: str, tpe: int, concurrency: int, transport: str
) -> AsyncIterator[Work]:
    """``CompletionsClient.stream``, every event consumed."""
    client = CompletionsClient(
        base_url=base_url,
        api_key=SecretStr("bench-key"),
        clock=SystemClock(),
        max_connections=concurrency + 2,
        transport=_transport(transport, concurrency + 2),
    )
    request = ChatRequest(MODEL, (ChatMessage("user", f"tpe={tpe}"),))

    async def one(_: int) -> None:
        async for _event in client.stream(request):
            pass

    async with client:
        yield one


@asynccontextmanager
async def engine_stage(
    base_url: str, tpe: int, concurrency: int, transport: str
) -> AsyncIterator[Work]:
    """``Engine.handle`` into an ``EditingSink`` over a ``RecordingSurface``."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            _env_file=None,
            groq_api_key=SecretStr("bench-key"),
            api_base_url=base_url,
            api_provider="other",
            database_path=Path(tmp) / "bench.db",
            quota_enabled=False,
            max_concurrent_requests=concurrency,
        )
        async with open_runtime(settings) as rt:
            if transport != "default":
                await rt.completions._http._transport.aclose()
                chosen = _transport(transport, concurrency + 2)
                rt.completions._http._transport = chosen  # type: ignore[assignment]
            clock = SystemClock()
            limits = SurfaceLimits(max_chars=2000, min_edit_interval_s=1.0)
            turn = 0

            async def one(i: int) -> None:
                nonlocal turn
                turn += 1
                key = ConversationKey(Platform("terminal"), dm_user=f"u{i}-{turn}")
                user = UserRef(Platform("terminal"), f"u{i}")
                surface = RecordingSurface(limits, clock=clock, name=f"r{turn}")
                sink = EditingSink(surface, pacer=rt.pacer, clock=clock)
                await rt.engine.handle(Incoming(key, user, f"tpe={tpe}", str(turn)), sink)
                if not surface.texts() or surface.violations:
                    raise RuntimeError(f"bad reply: {surface.texts()} {surface.violations}")

            yield one


async def run(args: argparse.Namespace, base_url: str) -> None:
    print(
        f"{args.concurrency} streams at once, {args.rate:g} tokens/s each, transport "
        f"{args.transport}; µs CPU per SSE event, median of {args.rounds} rounds "
        "(stages alternate within each round)"
    )
    for tpe in (1, 4):
        reads = record(tpe)
        events = len(reads)
        sse = statistics.median(bench_sse(reads, args.rounds))
        figures: dict[str, list[float]] = {"floor": [], "client": [], "engine": []}
        async with (
            floor_stage(base_url, tpe, args.concurrency) as floor,
            client_stage(base_url, tpe, args.concurrency, args.transport) as client,
            engine_stage(base_url, tpe, args.concurrency, args.transport) as engine,
        ):
            stages = {"floor": floor, "client": client, "engine": engine}
            for work in stages.values():
                await work(0)  # warm-up: connections, imports, caches
            for _ in range(args.rounds):
                for name, work in stages.items():
                    figures[name].append(await _cpu_per_event(work, args.concurrency, events))
        f, c, e = (statistics.median(figures[k]) for k in ("floor", "client", "engine"))
        print(
            f"{tpe} token(s)/event ({events} events): sse {sse:5.1f}  client {c:6.1f}  "
            f"engine end to end {e:6.1f}  | floor {f:6.1f}  engine/floor {e / f:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rate", type=float, default=500.0, help="tokens/s per stream")
    parser.add_argument("--transport", choices=("default", "httpcore"), default="default")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.rate)
        return
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--rate", str(args.rate)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        asyncio.run(run(args, f"http://127.0.0.1:{port}/v1"))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
