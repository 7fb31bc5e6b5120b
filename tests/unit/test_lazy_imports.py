"""Libraries only some deployments use stay unloaded in the others (issue 14, idle RSS).

asyncpg and the fleet quota (~5 MB) are for ``DATABASE_URL``, prometheus-client and the
ops server for ``METRICS_PORT``, slack-bolt for Slack: a Discord bot on SQLite, the
common case, must not pay for them. A fresh interpreter imports what ``python -m bot
run`` imports for Discord and lists what got loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OPTIONAL = {"asyncpg", "prometheus_client", "slack_bolt", "slack_sdk"}
OPTIONAL_OURS = {"bot.limits.fleet", "bot.limits.fleet_db", "bot.store.postgres", "bot.metrics"}
# What ``python -m bot run`` imports for Discord on SQLite (benchmarks/bench_memory.py too).
DISCORD_ON_SQLITE = (
    "import bot.__main__, bot.app, bot.store.sqlite, bot.llm.transport, adapters.discord.adapter"
)

PROBE = f"""
import json, sys
{DISCORD_ON_SQLITE}
print(json.dumps(sorted(sys.modules)))
"""


def _loaded() -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(json.loads(out.stdout))


def test_a_discord_bot_on_sqlite_loads_no_optional_library() -> None:
    loaded = _loaded()
    assert {name.split(".")[0] for name in loaded} & OPTIONAL == set()
    assert loaded & OPTIONAL_OURS == set()
