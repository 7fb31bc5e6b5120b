"""The fake Discord against a tiny, plain ``discord.Client`` (not our adapter).

Proves the fake speaks enough of the real protocol for unmodified discord.py 2.7.1:
login, gateway, messages, edits, threads, app commands, rate limits and RESUME.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands

from tests.e2e.discord.conftest import running
from tests.fakes.discord_server import DEAFENING, MALFORMED, FakeDiscord

pytestmark = pytest.mark.e2e


def _intents(*, content: bool = True) -> discord.Intents:
    intents = discord.Intents.default()
    intents.message_content = content
    return intents


class Probe(discord.Client):
    """Queues every message not written by itself; notes resumes."""

    def __init__(self, *, intents: discord.Intents | None = None) -> None:
        super().__init__(intents=intents or _intents(), guild_ready_timeout=0.05)
        self.inbox: asyncio.Queue[discord.Message] = asyncio.Queue()
        self.resumed = asyncio.Event()

    async def on_message(self, message: discord.Message) -> None:
        if message.author != self.user:
            await self.inbox.put(message)

    async def on_resumed(self) -> None:
        self.resumed.set()

    async def next_message(self, within: float = 5.0) -> discord.Message:
        return await asyncio.wait_for(self.inbox.get(), within)


def _text_channel(client: discord.Client, fake: FakeDiscord) -> discord.TextChannel:
    channel = client.get_channel(int(fake.channel_id))
    assert isinstance(channel, discord.TextChannel)
    return channel


async def test_login_identify_ready_and_guild(fake_discord: FakeDiscord) -> None:
    client = Probe()
    async with running(client, fake_discord.token):
        assert client.user is not None and str(client.user.id) == fake_discord.bot.id
        assert str(client.application_id) == fake_discord.app_id
        guild = client.get_guild(int(fake_discord.guild_id))
        assert guild is not None and guild.me is not None
        assert _text_channel(client, fake_discord).name == "general"
        assert {r.name for r in guild.roles} >= {"@everyone", "member", "muted"}
        await fake_discord.wait_for(lambda: fake_discord.gateway.heartbeats >= 1)
    gw = fake_discord.gateway
    assert gw.identifies == 1 and gw.intents is not None and gw.intents & (1 << 15)
    paths = [c.path for c in fake_discord.calls]
    assert paths[:2] == ["/users/@me", "/oauth2/applications/@me"]


async def test_wrong_token_fails_login(fake_discord: FakeDiscord) -> None:
    client = Probe()
    with pytest.raises(discord.LoginFailure):
        async with running(client, "not-the-token"):
            pass


async def test_mention_reply_and_edit_are_recorded(fake_discord: FakeDiscord) -> None:
    client = Probe()
    async with running(client, fake_discord.token):
        await fake_discord.send_message("ping", mention=True)
        message = await client.next_message()
        assert client.user is not None and client.user in message.mentions
        assert isinstance(message.author, discord.Member)  # member payload complete
        assert message.content == f"<@{fake_discord.bot.id}> ping"
        reply = await message.reply("pong", mention_author=False)
        await reply.edit(content="pong, edited")
    (sent,) = fake_discord.bot_messages(fake_discord.channel_id)
    assert sent.history == ["pong", "pong, edited"]
    assert fake_discord.final_content(sent.id) == "pong, edited"
    assert sent.bodies[0]["message_reference"]["message_id"] == message.id
    assert sent.payload["type"] == 19 and sent.payload["referenced_message"]["id"] == str(
        message.id
    )


async def test_dm_arrives_as_dm_channel_and_can_be_answered(fake_discord: FakeDiscord) -> None:
    client = Probe()
    async with running(client, fake_discord.token):
        await fake_discord.send_dm("hello in private")
        message = await client.next_message()
        assert isinstance(message.channel, discord.DMChannel) and message.guild is None
        await message.channel.send("hi back")
    (sent,) = fake_discord.bot_messages(fake_discord.dm_channel_id(fake_discord.alice))
    assert sent.content == "hi back"


async def test_thread_from_message_is_cached_for_later_messages(
    fake_discord: FakeDiscord,
) -> None:
    client = Probe()
    async with running(client, fake_discord.token):
        await fake_discord.send_message("start a thread", mention=True)
        message = await client.next_message()
        thread = await message.create_thread(name="chat")
        assert isinstance(thread, discord.Thread) and thread.id == message.id
        await thread.send("first answer")
        await fake_discord.send_message("follow-up", channel_id=str(thread.id))
        follow = await client.next_message()
    assert isinstance(follow.channel, discord.Thread)  # not a PartialMessageable
    assert follow.channel.parent_id == int(fake_discord.channel_id)
    assert follow.channel.owner_id == int(fake_discord.bot.id)
    assert [m.content for m in fake_discord.bot_messages(str(thread.id))] == ["first answer"]


async def test_without_content_intent_only_mentions_carry_text(fake_discord: FakeDiscord) -> None:
    client = Probe(intents=_intents(content=False))
    async with running(client, fake_discord.token):
        await fake_discord.send_message("not for the bot")
        assert (await client.next_message()).content == ""
        await fake_discord.send_message("for the bot", mention=True)
        assert (await client.next_message()).content.endswith("for the bot")


async def test_privileged_intents_off_refuse_identify(fake_discord: FakeDiscord) -> None:
    fake_discord.gateway.privileged_intents_enabled = False
    client = Probe()
    with pytest.raises(discord.PrivilegedIntentsRequired):
        async with running(client, fake_discord.token):
            pass


class CommandProbe(Probe):
    """Registers /model (global, with autocomplete) and /slow (guild, deferred)."""

    def __init__(self, guild_id: int) -> None:
        super().__init__()
        self.tree = app_commands.CommandTree(self)
        self.guild = discord.Object(guild_id)
        models = ["gemma2-9b-it", "llama-3.3-70b-versatile", "llama-3.1-8b-instant"]

        async def complete(_: discord.Interaction, current: str) -> list[Any]:
            return [app_commands.Choice(name=m, value=m) for m in models if current in m]

        @self.tree.command(name="model", description="Pick the model")
        @app_commands.autocomplete(name=complete)
        async def model(interaction: discord.Interaction, name: str) -> None:
            await interaction.response.send_message(f"model set to {name}", ephemeral=True)

        @self.tree.command(name="slow", description="Deferred answer", guild=self.guild)
        async def slow(interaction: discord.Interaction) -> None:
            await interaction.response.defer(thinking=True)
            await interaction.edit_original_response(content="done")
            await interaction.followup.send("and more", ephemeral=True)

    async def setup_hook(self) -> None:
        await self.tree.sync()
        await self.tree.sync(guild=self.guild)


async def test_command_sync_autocomplete_and_interactions(fake_discord: FakeDiscord) -> None:
    client = CommandProbe(int(fake_discord.guild_id))
    async with running(client, fake_discord.token):
        assert [c["name"] for c in fake_discord.global_commands] == ["model"]
        assert [c["name"] for c in fake_discord.guild_commands[fake_discord.guild_id]] == ["slow"]
        auto = await fake_discord.send_autocomplete("model", "name", "llama")
        await fake_discord.wait_for(lambda: auto.answered)
        chosen = await fake_discord.send_command("model", {"name": "gemma2-9b-it"})
        await fake_discord.wait_for(lambda: chosen.answered)
        slow = await fake_discord.send_command("slow")
        await fake_discord.wait_for(lambda: slow.followups)
    assert [c["value"] for c in auto.choices] == ["llama-3.3-70b-versatile", "llama-3.1-8b-instant"]
    assert chosen.response_text == "model set to gemma2-9b-it" and chosen.ephemeral
    assert slow.callbacks[0]["type"] == 5 and slow.original == ["done"]
    assert slow.followups[0]["content"] == "and more" and slow.followups[0]["flags"] == 64


async def test_injected_429_is_retried_by_discord_py(fake_discord: FakeDiscord) -> None:
    fake_discord.inject("PATCH", r"^/channels/\d+/messages/\d+$", retry_after=0.2)
    client = Probe()
    async with running(client, fake_discord.token):
        sent = await _text_channel(client, fake_discord).send("v1")
        await sent.edit(content="v2")
    assert [c.status for c in fake_discord.calls_to("PATCH", r"/messages/")] == [429, 200]
    assert fake_discord.injected_429 == 1 and fake_discord.count_429 == 0
    assert fake_discord.final_content(str(sent.id)) == "v2"


async def test_honest_headers_make_discord_py_wait_instead_of_429(
    fake_discord: FakeDiscord,
) -> None:
    fake_discord.message_window_s = 1.0
    client = Probe()
    async with running(client, fake_discord.token):
        channel = _text_channel(client, fake_discord)
        started = time.monotonic()
        await asyncio.gather(*(channel.send(f"m{i}") for i in range(7)))
        elapsed = time.monotonic() - started
    assert fake_discord.count_429 == 0
    assert len(fake_discord.bot_messages(fake_discord.channel_id)) == 7
    assert elapsed >= 0.9  # messages 6 and 7 waited for the window to reset


async def test_exceeding_a_window_is_answered_429_and_counted(fake_discord: FakeDiscord) -> None:
    url = f"{fake_discord.api_base}/channels/{fake_discord.channel_id}/messages"
    headers = {"Authorization": f"Bot {fake_discord.token}"}
    statuses, last = [], None
    async with aiohttp.ClientSession(headers=headers) as session:
        for i in range(6):
            async with session.post(url, json={"content": f"raw {i}"}) as resp:
                statuses.append(resp.status)
                last = (dict(resp.headers), await resp.json())
    assert statuses == [200] * 5 + [429]
    assert fake_discord.count_429 == 1
    assert last is not None and last[0]["Via"] and last[0]["Content-Type"] == "application/json"
    assert 0 < last[1]["retry_after"] <= 5.0 and last[0]["X-RateLimit-Remaining"] == "0"


async def test_content_over_2000_chars_is_rejected(fake_discord: FakeDiscord) -> None:
    client = Probe()
    async with running(client, fake_discord.token):
        with pytest.raises(discord.HTTPException) as info:
            await _text_channel(client, fake_discord).send("x" * 2001)
    assert info.value.status == 400 and info.value.code == 50035


async def test_gateway_drop_resumes_and_replays_missed_events(fake_discord: FakeDiscord) -> None:
    client = Probe()
    async with running(client, fake_discord.token):
        await fake_discord.drop_gateway()
        # Sent while the socket is down: must arrive through the RESUME replay.
        await fake_discord.send_message("while down", mention=True)
        assert (await client.next_message()).content.endswith("while down")
        await asyncio.wait_for(client.resumed.wait(), 5)
        await fake_discord.send_message("after resume", mention=True)
        assert (await client.next_message()).content.endswith("after resume")
    assert fake_discord.gateway.resumes == 1 and fake_discord.gateway.identifies == 1
    assert fake_discord.gateway.connect_paths == ["/gateway", "/resume"]


async def test_503_and_429_without_via_are_raised_at_once_and_a_nonce_dedupes(
    fake_discord: FakeDiscord,
) -> None:
    """The faults the adapter must retry itself: discord.py gives up on the first try."""
    fake_discord.inject("POST", r"/messages$", status=503)
    fake_discord.inject("POST", r"/messages$", status=429, retry_after=0.2, via=False)
    client = Probe()
    async with running(client, fake_discord.token):
        channel = _text_channel(client, fake_discord)
        with pytest.raises(discord.DiscordServerError):
            await channel.send("one")
        with pytest.raises(discord.HTTPException) as info:
            await channel.send("two")
        first = await channel.send("three", nonce="n-1")
        again = await channel.send("three", nonce="n-1")  # a retry of a post that arrived
    assert info.value.status == 429 and "Via" not in info.value.response.headers
    assert first.id == again.id and len(fake_discord.bot_messages()) == 1


async def test_thread_burst_is_refused_with_a_long_shared_429(fake_discord: FakeDiscord) -> None:
    limit = fake_discord.limit_threads(2, retry_after=272.0, lasts_s=0.3)
    client = Probe()
    client.http.max_ratelimit_timeout = 30.0  # what Client(max_ratelimit_timeout=30) sets
    async with running(client, fake_discord.token):
        channel = _text_channel(client, fake_discord)
        made = [await (await channel.send(f"m{i}")).create_thread(name=f"t{i}") for i in (1, 2)]
        third = await channel.send("m3")
        with pytest.raises(discord.RateLimited) as info:
            await third.create_thread(name="t3")
        await asyncio.sleep(0.35)
        later = await third.create_thread(name="t3")
    assert len(made) == 2 and 271 < info.value.retry_after <= 272 and later.id == third.id
    refused = fake_discord.calls_to("POST", r"/threads$")[2]
    assert refused.status == 429 and limit.refused == 1


@pytest.mark.parametrize("kind", MALFORMED)
async def test_malformed_gateway_events_and_what_discord_py_does_with_them(
    fake_discord: FakeDiscord, kind: str
) -> None:
    """discord.py raises the parse error out of ``connect()`` for the ``DEAFENING``
    ones: the session is over and nothing reconnects it. The others it survives."""
    client = Probe()
    await client.login(fake_discord.token)
    gateway = asyncio.create_task(client.connect(reconnect=True))
    try:
        await asyncio.wait_for(client.wait_until_ready(), 5)
        await fake_discord.send_malformed(kind)
        if kind in DEAFENING:
            await asyncio.wait({gateway}, timeout=5)
            assert gateway.done() and gateway.exception() is not None
        else:
            await fake_discord.send_message("after", mention=True)
            while not (await client.next_message()).content.endswith("after"):
                pass  # the broken message itself, delivered all the same
    finally:
        await client.close()
        await asyncio.wait({gateway}, timeout=5)
        if gateway.done() and not gateway.cancelled():
            gateway.exception()  # retrieved: asserted above where it matters
