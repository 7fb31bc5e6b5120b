"""The account mirror against ``RefillAccount`` in virtual time: users sending requests
through ``QuotaManager`` as the engine would, the server counting them as Groq does.

Shared by ``tests/unit/test_account_mirror.py`` and handy from a shell::

    python -m tests.mirror_scenario
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any

from bot.context import estimate_tokens
from bot.errors import QuotaExceeded
from bot.limits.config import QuotaConfig
from bot.limits.quota import QuotaManager
from bot.limits.table import parse_overrides
from bot.types import Platform, Usage, UserRef
from tests.fakes.clock import FakeClock
from tests.fakes.refill_account import RefillAccount

MODEL = "llama-3.1-8b-instant"  # free table: 30 RPM, 14,400 RPD, 6,000 TPM, 500,000 TPD
MAX_OUTPUT = 1_024
COMPLETION = 290  # ~200 words
ANSWER_S = (0.6, 1.9, 1.1, 2.4, 0.9, 1.5, 2.1, 1.3)
LATENCY_S = (0.03, 0.08, 0.05, 0.12)


@dataclass
class Outcome:
    count_429: int
    answered: int
    timed_out: int
    virtual_s: float
    refused: list[str] = field(default_factory=list)
    other_429: int = 0
    charges_cap: bool | None = None
    quota: QuotaManager | None = None


async def run(
    *,
    users: int = 20,
    requests: int = 100,
    other_client: bool = False,
    keep_cap_charged: bool = False,
    limits: str = "",
    server: dict[str, Any] | None = None,
    max_wait_s: float = 300.0,
    completion: int = COMPLETION,
    burst: tuple[int, float] = (1_000, 10.0),
    user_share: float = 1.0,
) -> Outcome:
    """``users`` users send ``requests`` between them, each one at a time; with
    ``other_client``, another client on the key spends ``burst`` (tokens, every
    seconds) in one request each time."""
    clock = FakeClock(autoadvance=True)
    account = RefillAccount(MODEL, keep_cap_charged=keep_cap_charged, **(server or {}))
    config = QuotaConfig(
        user_share=user_share,
        user_max_in_flight=1,
        max_queue_wait_s=max_wait_s,
        model_limits=parse_overrides(limits),
        max_output_tokens=MAX_OUTPUT,
    )
    quota = QuotaManager(config=config, clock=clock)
    answered = timed_out = 0

    async def one(user: UserRef, n: int) -> None:
        nonlocal answered, timed_out
        text = f"question {n} from {user.user_id}: how far is the moon?"
        seq = int(user.user_id[1:]) + n
        while True:
            try:
                admission = await quota.admit(user, MODEL, estimate_tokens(text) + MAX_OUTPUT)
                break
            except QuotaExceeded as exc:
                if exc.scope == "account":
                    timed_out += 1
                    return
                await clock.sleep(max(exc.retry_in_s, 0.001))
        await clock.sleep(LATENCY_S[seq % len(LATENCY_S)])
        snapshot, charge = account.start(math.ceil(len(text) / 4), MAX_OUTPUT, clock.time())
        await clock.sleep(LATENCY_S[(seq + 1) % len(LATENCY_S)])
        quota.observe(snapshot)
        if charge is None:
            await quota.settle(admission, Usage(0, 0))
            return
        await clock.sleep(ANSWER_S[seq % len(ANSWER_S)])
        account.finish(charge, completion, clock.time())
        await clock.sleep(LATENCY_S[(seq + 2) % len(LATENCY_S)])
        await quota.settle(admission, Usage(charge.prompt, completion))
        answered += 1

    async def sender(user: UserRef, count: int) -> None:
        for n in range(count):
            await one(user, n)

    async def other() -> None:
        while True:
            account.burn(burst[0], clock.time())
            await clock.sleep(burst[1])

    refs = [UserRef(Platform("discord"), f"u{i:02d}") for i in range(users)]
    counts = [requests // users + (i < requests % users) for i in range(users)]
    start = clock.now()
    side = asyncio.create_task(other()) if other_client else None
    try:
        await asyncio.wait_for(
            asyncio.gather(*(sender(u, c) for u, c in zip(refs, counts, strict=True))), 60
        )
    finally:
        if side is not None:
            side.cancel()
            await asyncio.gather(side, return_exceptions=True)
    status = quota.account_status()[0]
    return Outcome(
        account.count_429,
        answered,
        timed_out,
        clock.now() - start,
        account.refused,
        account.other_429,
        status.charges_cap,
        quota,
    )


async def _main() -> None:
    for other in (False, True):
        for keep in (False, True):
            out = await run(other_client=other, keep_cap_charged=keep, server={"tpm": 12_000})
            print(
                f"other={other!s:5} keep_cap={keep!s:5}: 429s {out.count_429} {out.refused} "
                f"answered {out.answered} timed out {out.timed_out} in {out.virtual_s / 60:.1f} "
                f"min; other's 429s {out.other_429}; charges_cap {out.charges_cap}"
            )


if __name__ == "__main__":
    asyncio.run(_main())
