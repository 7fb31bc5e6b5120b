"""Engine overhead and context-load benchmarks (issue 2). Prints medians and ratios.

1. Engine overhead, against a bare httpx streaming request to the same fake server in
   the same run:
   - dispatch: time from ``Engine.handle()`` (or the bare ``client.stream()`` call) to
     the request arriving at the fake server;
   - first token: time from the request's arrival at the fake to the sink's first
     update (bare: to the first SSE content line read by httpx). The fake's own
     time to first token is the same for both, so the ratio shows our added latency.
2. Context load: time to build a request's context (store window + message list) for
   a 10-message vs a 10,000-message conversation, both filling the same token budget.

Run: ``.venv/bin/python benchmarks/bench_engine.py [--runs N]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.app import open_runtime  # noqa: E402
from bot.context import build_messages, estimate_tokens  # noqa: E402
from bot.settings import Settings  # noqa: E402
from bot.store import SqliteStore  # noqa: E402
from bot.types import (  # noqa: E402
    ConversationKey,
    Incoming,
    Platform,
    ReplyRef,
    TurnStatus,
    UserRef,
)
from tests.fakes.groq_server import FakeGroq  # noqa: E402


class TimingSink:
    """Records when the first update arrived."""

    reply_ref = ReplyRef()  # it posts nothing

    def __init__(self) -> None:
        self.first_update: float | None = None

    async def start(self) -> None:
        return None

    async def status(self, text: str) -> None:
        return None

    async def update(self, text_so_far: str) -> None:
        if self.first_update is None:
            self.first_update = time.monotonic()

    async def finish(self, text: str, status: TurnStatus) -> None:
        return None

    async def fail(self, user_text: str) -> None:
        raise RuntimeError(f"benchmark turn failed: {user_text}")


async def bare_request(fake: FakeGroq, client: httpx.AsyncClient) -> tuple[float, float]:
    body = {
        "model": "openai/gpt-oss-120b",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "include_reasoning": False,
    }
    headers = {"Authorization": f"Bearer {fake.api_key}"}
    sent = time.monotonic()
    async with client.stream(
        "POST", f"{fake.base_url}/chat/completions", json=body, headers=headers
    ) as response:
        first: float | None = None
        async for line in response.aiter_lines():
            # The first chunk carries an empty content (role only): skip it like the engine.
            if first is None and '"content": "' in line and '"content": ""' not in line:
                first = time.monotonic()
    arrived = fake.chat_requests[-1]["at"]
    assert first is not None
    return arrived - sent, first - arrived


async def overhead(runs: int) -> None:
    fake = FakeGroq()
    await fake.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(
                _env_file=None,
                groq_api_key=fake.api_key,
                api_base_url=fake.base_url,
                database_path=Path(tmp) / "bench.db",
                quota_enabled=False,
            )
            async with open_runtime(settings) as rt, httpx.AsyncClient() as bare:
                await rt.completions.models()
                engine_dispatch, engine_first, bare_dispatch, bare_first = [], [], [], []
                for i in range(runs):
                    d, f = await bare_request(fake, bare)
                    bare_dispatch.append(d)
                    bare_first.append(f)
                    user = UserRef(Platform("terminal"), f"u{i}")
                    key = ConversationKey(Platform("terminal"), dm_user=f"u{i}")
                    sink = TimingSink()
                    start = time.monotonic()
                    await rt.engine.handle(Incoming(key, user, "hi", str(i)), sink)
                    arrived = fake.chat_requests[-1]["at"]
                    assert sink.first_update is not None
                    engine_dispatch.append(arrived - start)
                    engine_first.append(sink.first_update - arrived)
    finally:
        await fake.aclose()
    _report("dispatch (call -> request at fake)", engine_dispatch, bare_dispatch)
    _report("first token (arrival -> first update)", engine_first, bare_first)


def _report(name: str, ours: list[float], bare: list[float]) -> None:
    mo, mb = statistics.median(ours) * 1e3, statistics.median(bare) * 1e3
    print(f"{name}: engine median {mo:.2f} ms, bare httpx median {mb:.2f} ms, ratio {mo / mb:.2f}")


async def context_load(runs: int) -> None:
    # ~700-token messages: 10 of them already exceed the ~6,000-token budget, so both
    # conversations return the same amount and only total length differs.
    content = "word " * 560
    budget = 6000
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "ctx.db")
        await store.open()
        try:
            small = ConversationKey(Platform("terminal"), dm_user="small")
            large = ConversationKey(Platform("terminal"), dm_user="large")
            for key, count in ((small, 10), (large, 10_000)):
                for i in range(count):
                    role = "user" if i % 2 == 0 else "assistant"
                    await store.add_message(
                        key, role=role, content=content, tokens=estimate_tokens(content)
                    )
            timings: dict[str, list[float]] = {"small": [], "large": []}
            for _ in range(runs):
                for name, key in (("small", small), ("large", large)):
                    start = time.perf_counter()
                    history = await store.window(key, token_budget=budget)
                    build_messages("system", history)
                    timings[name].append(time.perf_counter() - start)
        finally:
            await store.aclose()
    s = statistics.median(timings["small"]) * 1e6
    lg = statistics.median(timings["large"]) * 1e6
    print(
        f"context load: 10 messages {s:.0f} µs, 10,000 messages {lg:.0f} µs "
        f"(median of {runs}), ratio {lg / s:.2f} (target ≤ 1.5)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    await overhead(args.runs)
    await context_load(args.runs)


if __name__ == "__main__":
    asyncio.run(main())
