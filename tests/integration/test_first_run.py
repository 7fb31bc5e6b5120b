"""A new user's first run, as the README says: ``cp .env.example .env``, then the bot.

Each test copies the shipped ``.env.example`` into a scratch directory as ``.env`` and
runs ``python -m bot`` there as a subprocess, so the example can never again break
start-up. Only what a user would edit is changed (a key, a URL, a token); the rest of
the file, with its many blank values, is loaded as shipped.
"""

from __future__ import annotations

import re
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from tests.fakes.discord_server import FakeDiscord
from tests.fakes.groq_server import FakeGroq
from tests.fakes.slack_server import FakeSlack
from tests.process import ROOT, BotRun, bot_env, run_bot, running_bot

EXAMPLE = (ROOT / ".env.example").read_text()


def _dotenv(workdir: Path, **edits: str) -> Path:
    """``.env.example`` as ``.env`` in ``workdir``, with ``KEY=`` lines edited as a user
    would (the value after ``=`` replaced; every other line unchanged)."""
    text = EXAMPLE
    for key, value in edits.items():
        text, count = re.subn(rf"^{key}=.*$", f"{key}={value}", text, flags=re.M)
        assert count == 1, f"{key} is not in .env.example"
    (workdir / ".env").write_text(text)
    return workdir


async def _bot(args: list[str], workdir: Path, stdin: str = "") -> tuple[int, str, str]:
    return await run_bot(args, bot_env(USER="newuser"), cwd=workdir, stdin=stdin)


async def test_unchanged_example_run_names_the_variables_to_set(tmp_path: Path) -> None:
    code, _, err = await _bot(["run"], _dotenv(tmp_path))
    assert code == 2
    assert "No platform is configured" in err
    assert "DISCORD_BOT_TOKEN" in err and "SLACK_BOT_TOKEN" in err
    assert "Invalid settings" not in err and "Traceback" not in err


async def test_unchanged_example_check_asks_for_the_groq_key(tmp_path: Path) -> None:
    code, _, err = await _bot(["check"], _dotenv(tmp_path))
    assert code == 2
    assert "GROQ_API_KEY is not set" in err and "console.groq.com" in err


async def test_example_with_a_key_and_url_chats(fake_groq: FakeGroq, tmp_path: Path) -> None:
    workdir = _dotenv(
        tmp_path, GROQ_API_KEY=str(fake_groq.api_key), API_BASE_URL=fake_groq.base_url
    )
    code, out, err = await _bot(["chat"], workdir, "hello from a new user\n")
    assert code == 0, err
    assert "last=hello from a new user" in out
    assert "Traceback" not in err and "Invalid settings" not in err
    assert (workdir / "data" / "bot.db").exists()  # DATABASE_PATH as shipped
    chat = fake_groq.chat_requests[-1]["body"]
    # Blank sampling settings were left to the API: none was sent.
    assert not {"temperature", "top_p", "frequency_penalty", "presence_penalty"} & chat.keys()
    assert chat["max_completion_tokens"] == 1024  # Groq's own field for the answer cap


async def test_whitespace_only_values_also_mean_unset(fake_groq: FakeGroq, tmp_path: Path) -> None:
    workdir = _dotenv(
        tmp_path,
        GROQ_API_KEY=f" {fake_groq.api_key} ",
        API_BASE_URL=fake_groq.base_url,
        TEMPERATURE="   ",
        QUOTA_USER_RPM=" ",
        REASONING_EFFORT=" ",
    )
    code, out, err = await _bot(["chat"], workdir, "hi\n")
    assert code == 0, err
    assert "last=hi" in out


# ----- one platform configured, the other's line left blank -----


def _running(workdir: Path) -> AbstractAsyncContextManager[BotRun]:
    return running_bot(workdir, bot_env(USER="newuser"))


@pytest.mark.e2e
async def test_slack_only_with_a_blank_discord_token_starts_slack_alone(
    fake_groq: FakeGroq, tmp_path: Path
) -> None:
    async with FakeSlack() as slack:
        workdir = _dotenv(
            tmp_path,
            GROQ_API_KEY=str(fake_groq.api_key),
            API_BASE_URL=fake_groq.base_url,
            LOG_LEVEL="INFO",
            SLACK_BOT_TOKEN=slack.bot_token,
            SLACK_APP_TOKEN=slack.app_token,
            SLACK_API_BASE_URL=slack.base_url,
        )  # DISCORD_BOT_TOKEN= stays blank, as shipped
        async with _running(workdir) as bot:
            await bot.wait_for_log("slack adapter started")
            sent = await slack.mention(slack.alice, "are you there")
            await slack.wait_for(
                lambda: any(
                    "last=are you there" in m.text for m in slack.bot_replies(sent.channel, sent.ts)
                ),
                within=20,
            )
            assert bot.proc.returncode is None
        log = bot.text()
    assert "discord adapter started" not in log and "DISCORD_BOT_TOKEN" not in log


@pytest.mark.e2e
async def test_discord_only_with_blank_slack_tokens_starts_discord_alone(
    fake_groq: FakeGroq, tmp_path: Path
) -> None:
    async with FakeDiscord() as discord:
        overrides = {k.upper(): v for k, v in discord.settings_overrides().items()}
        workdir = _dotenv(
            tmp_path,
            GROQ_API_KEY=str(fake_groq.api_key),
            API_BASE_URL=fake_groq.base_url,
            LOG_LEVEL="INFO",
            **overrides,  # DISCORD_BOT_TOKEN and the fake's REST and gateway URLs
        )  # SLACK_BOT_TOKEN= and SLACK_APP_TOKEN= stay blank, as shipped
        async with _running(workdir) as bot:
            await bot.wait_for_log("discord adapter started")
            await discord.send_message("are you there", author=discord.alice, mention=True)
            await discord.wait_for(
                lambda: any("last=are you there" in m.content for m in discord.bot_messages()),
                within=20,
            )
            assert bot.proc.returncode is None, bot.text()
        log = bot.text()
    # A Slack "needed" exit would come from serve() starting a Slack adapter after
    # Discord's. serve() logs "shutting down" (on the SIGTERM that leaving `_running`
    # sends, after which the process has exited) only once every adapter's start()
    # returned, and then exits 0, not with the configuration error.
    assert bot.proc.returncode == 0 and "shutting down" in log, log
    assert "slack adapter started" not in log and "SLACK_BOT_TOKEN" not in log
