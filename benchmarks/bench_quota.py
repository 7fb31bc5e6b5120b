"""Quota limiter benchmark: ``python benchmarks/bench_quota.py [--quick]``.

1. Median µs per check-and-reserve (``QuotaManager.admit`` on its no-wait path) with
   100, 1,000 and 10,000 known users: it must stay under 50 µs and flat.
2. The 20-user scenario against the fake Groq server enforcing 30 RPM / 6,000 TPM
   (buckets refilled continuously, caps charged up front and refunded at the end, as
   Groq does), on a virtual clock shared by quota and server (minutes pass in about a
   second): 429s received, answered requests per user (min/median/max), the median
   queue wait, and the server's own count of what it admitted against what its refill
   allowed.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.limits.config import QuotaConfig  # noqa: E402
from bot.limits.quota import QuotaManager  # noqa: E402
from bot.limits.table import parse_overrides  # noqa: E402
from bot.types import Platform, Usage, UserRef  # noqa: E402
from tests.fakes.clock import FakeClock  # noqa: E402

MODEL = "openai/gpt-oss-120b"
BIG = "rpm:1000000000,rpd:1000000000,tpm:1000000000,tpd:1000000000"
T0 = 1_700_000_040.0


async def bench_admit(users: int, calls: int) -> tuple[float, float]:
    """(median, p99) µs of ``admit`` over ``calls`` calls spread across ``users`` users."""
    config = QuotaConfig(
        model_limits=parse_overrides(f"{MODEL}={BIG}"),
        user_rpm=10**9,
        user_rpd=10**9,
        user_tpm=10**12,
        user_tpd=10**12,
    )
    # Time stands still (nothing advances it and, the limits being out of reach, nothing
    # sleeps): every admit takes the same path, whatever the loop count.
    quota = QuotaManager(config=config, clock=FakeClock(T0, epoch=T0, instant_sleep=True))
    refs = [UserRef(Platform("discord"), str(i)) for i in range(users)]
    usage = Usage(100, 50)
    for ref in refs:  # make every user known
        await quota.settle(await quota.admit(ref, MODEL, 200), usage)
    samples: list[int] = []
    clock = time.perf_counter_ns
    for i in range(calls):
        ref = refs[(i * 7919) % users]  # hop around the user table
        t0 = clock()
        admission = await quota.admit(ref, MODEL, 200)
        samples.append(clock() - t0)
        await quota.settle(admission, usage)
    samples.sort()
    return statistics.median(samples) / 1_000, samples[int(len(samples) * 0.99)] / 1_000


async def main(quick: bool) -> int:
    calls = 5_000 if quick else 50_000
    print("check-and-reserve (QuotaManager.admit, no wait), median / p99 µs per call:")
    medians = []
    for users in (100, 1_000, 10_000):
        median, p99 = await bench_admit(users, calls)
        medians.append(median)
        print(f"  {users:>6,} users: {median:6.2f} µs   p99 {p99:6.2f} µs")
    flat = max(medians) / min(medians)
    print(f"  spread 10,000 vs 100 users: ×{flat:.2f} (target: under 50 µs and flat)")
    ok = max(medians) < 50

    try:
        from tests.integration.test_quota_fake_groq import run_scenario
    except ImportError as exc:
        print(f"\n20-user scenario skipped: {exc}")
        return 0 if ok else 1
    failed = not ok
    for label, max_wait in (("production's 60 s max wait", 60.0), ("300 s max wait", 300.0)):
        print(f"\n20 users x 5 requests, fake Groq enforcing 30 RPM / 6,000 TPM, {label}:")
        result = await run_scenario(max_wait_s=max_wait)
        per_user = sorted(result.answered_per_user.values())
        print(f"  429s received from the fake: {result.count_429} (target 0)")
        # What an empty bucket lets through over the run: the burst plus the refill.
        rpm_allowed = 30 + 30 / 60 * result.virtual_s
        tpm_allowed = 6_000 + 6_000 / 60 * result.virtual_s
        stats = result.fake_stats.bot
        print(
            f"  server admitted {stats.requests} requests (refill allowed {rpm_allowed:.0f})"
            f" and charged {stats.tokens:,} tokens after refunds (refill allowed"
            f" {tpm_allowed:,.0f}: {stats.tokens / tpm_allowed:.0%} used)"
        )
        print(f"  answered {result.answered}, told they timed out waiting {result.timed_out}")
        print(
            "  answered per user min/median/max: "
            f"{per_user[0]}/{statistics.median(per_user):g}/{per_user[-1]}"
        )
        print(
            f"  queue wait median {result.median_wait_s:.1f} s, max {max(result.waits_s):.1f} s"
            f" (virtual time; whole run {result.virtual_s / 60:.1f} min)"
        )
        failed = failed or result.count_429 > 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main("--quick" in sys.argv)))
