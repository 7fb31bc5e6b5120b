"""Application commands for the fake Discord: command sync, INTERACTION_CREATE, callbacks,
followup webhooks and the original response. A mixin of ``FakeDiscord``."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from tests.fakes import discord_payloads as p
from tests.fakes.discord_gateway import FakeGateway
from tests.fakes.discord_http import BODY, content_error, error_response, json_response
from tests.fakes.discord_payloads import FakeUser, Json

__all__ = ["FakeInteraction", "InteractionRoutes"]

EPHEMERAL = 64
_OPTION_TYPES = {str: 3, int: 4, bool: 5, float: 10}
_SUB_COMMAND = 1


@dataclass(slots=True)
class FakeInteraction:
    """One injected interaction and everything the bot answered to it."""

    id: str
    token: str
    payload: Json
    callbacks: list[Json] = field(default_factory=list)
    original: list[str] = field(default_factory=list)  # content history of @original
    original_flags: int = 0
    followups: list[Json] = field(default_factory=list)

    @property
    def user(self) -> Json:
        """The invoking user's payload."""
        member = self.payload.get("member")
        return dict(member["user"]) if member else dict(self.payload["user"])

    @property
    def choices(self) -> list[Json]:
        """Autocomplete choices from the type-8 callback ([] before it arrives)."""
        for cb in self.callbacks:
            if cb.get("type") == 8:
                return list(cb.get("data", {}).get("choices", []))
        return []

    @property
    def response_text(self) -> str | None:
        """The original response's current content (None until answered)."""
        return self.original[-1] if self.original else None

    @property
    def ephemeral(self) -> bool:
        return bool(self.original_flags & EPHEMERAL)

    @property
    def answered(self) -> bool:
        return bool(self.callbacks)


def options(
    values: dict[str, object], focused: str | None = None, *, subcommand: str | None = None
) -> list[Json]:
    """Option dicts with types inferred from the Python values (str, int, bool, float).

    ``subcommand``: the values are the options of that subcommand, nested in one option
    of type 1 (SUB_COMMAND), as Discord sends a subcommand's interaction ("Subcommands
    and Subcommand Groups", https://discord.com/developers/docs/interactions/application-commands).
    """
    flat = [
        {
            "name": name,
            "type": _OPTION_TYPES[type(value)],
            "value": value,
            **({"focused": True} if name == focused else {}),
        }
        for name, value in values.items()
    ]
    if subcommand is None:
        return flat
    return [{"name": subcommand, "type": _SUB_COMMAND, "options": flat}]


class InteractionRoutes:
    """REST routes and injection helpers for interactions; expects ``FakeDiscord``'s fields."""

    snowflake: Callable[[], str]
    gateway: FakeGateway
    app_id: str
    bot: FakeUser
    alice: FakeUser
    guild_id: str
    channel_id: str
    channels: dict[str, str]
    threads: dict[str, Json]
    dm_channel_id: Callable[[FakeUser], str]

    def __init__(self) -> None:
        self.global_commands: list[Json] = []
        self.guild_commands: dict[str, list[Json]] = {}
        self.interactions: dict[str, FakeInteraction] = {}
        self._by_token: dict[str, FakeInteraction] = {}

    def add_interaction_routes(self, r: web.UrlDispatcher, api: str) -> None:
        r.add_put(api + "/applications/{app_id}/commands", self._put_commands)
        r.add_get(api + "/applications/{app_id}/commands", self._get_commands)
        r.add_put(api + "/applications/{app_id}/guilds/{guild_id}/commands", self._put_commands)
        r.add_get(api + "/applications/{app_id}/guilds/{guild_id}/commands", self._get_commands)
        r.add_post(api + "/interactions/{interaction_id}/{token}/callback", self._callback)
        r.add_post(api + "/webhooks/{app_id}/{token}", self._followup)
        r.add_get(api + "/webhooks/{app_id}/{token}/messages/{message_id}", self._get_original)
        r.add_patch(api + "/webhooks/{app_id}/{token}/messages/{message_id}", self._edit_original)

    # ----- injection -----

    async def send_command(
        self,
        name: str,
        values: dict[str, object] | None = None,
        *,
        user: FakeUser | None = None,
        channel_id: str | None = None,
        dm: bool = False,
        subcommand: str | None = None,
    ) -> FakeInteraction:
        """Dispatch a chat-input command (type 2) as ``user`` in a channel, thread or DM;
        ``subcommand``: of a command group (``/channel show``)."""
        opts = options(values or {}, subcommand=subcommand)
        return await self._interact(2, name, opts, user, channel_id, dm)

    async def send_autocomplete(
        self,
        name: str,
        focused: str,
        value: str,
        others: dict[str, object] | None = None,
        *,
        user: FakeUser | None = None,
        channel_id: str | None = None,
        dm: bool = False,
        subcommand: str | None = None,
    ) -> FakeInteraction:
        """Dispatch an autocomplete (type 4) for option ``focused`` typed so far as ``value``."""
        opts = options({**(others or {}), focused: value}, focused=focused, subcommand=subcommand)
        return await self._interact(4, name, opts, user, channel_id, dm)

    async def _interact(
        self,
        kind: int,
        name: str,
        opts: list[Json],
        user: FakeUser | None,
        channel_id: str | None,
        dm: bool,
    ) -> FakeInteraction:
        user = user or self.alice
        guild_id = None if dm else self.guild_id
        command = self._find_command(name, guild_id)
        data: Json = {
            "id": command.get("id") or self.snowflake(),
            "name": name,
            "type": 1,
            "options": opts,
        }
        if command.get("guild_id"):
            # Without it discord.py looks only among global commands: CommandNotFound.
            data["guild_id"] = command["guild_id"]
        channel = self._interaction_channel(user, channel_id, dm)
        token = "itok-" + secrets.token_urlsafe(24)
        payload = p.interaction(
            interaction_id=self.snowflake(),
            application_id=self.app_id,
            kind=kind,
            token=token,
            user=user,
            data=data,
            channel=channel,
            guild_id=guild_id,
        )
        record = FakeInteraction(payload["id"], token, payload)
        self.interactions[record.id] = self._by_token[token] = record
        await self.gateway.dispatch("INTERACTION_CREATE", payload)
        return record

    async def send_interaction_without_data(self) -> FakeInteraction:
        """A chat-input INTERACTION_CREATE whose ``data`` is missing (a malformed event)."""
        token = "itok-" + secrets.token_urlsafe(24)
        payload = p.interaction(
            interaction_id=self.snowflake(),
            application_id=self.app_id,
            kind=2,
            token=token,
            user=self.alice,
            data={},
            channel=self._interaction_channel(self.alice, None, False),
            guild_id=self.guild_id,
        )
        del payload["data"]
        record = FakeInteraction(payload["id"], token, payload)
        self.interactions[record.id] = self._by_token[token] = record
        await self.gateway.dispatch("INTERACTION_CREATE", payload)
        return record

    def _find_command(self, name: str, guild_id: str | None) -> Json:
        scoped = self.guild_commands.get(guild_id, []) if guild_id else []
        for cmd in [*scoped, *self.global_commands]:
            if cmd["name"] == name:
                return cmd
        return {}

    def _interaction_channel(self, user: FakeUser, channel_id: str | None, dm: bool) -> Json:
        if dm:
            return {"id": self.dm_channel_id(user), "type": 1, "recipients": [user.payload()]}
        channel_id = channel_id or self.channel_id
        if channel_id in self.threads:
            t = self.threads[channel_id]
            return {
                k: t[k]
                for k in (
                    "id",
                    "type",
                    "guild_id",
                    "parent_id",
                    "name",
                    "owner_id",
                    "thread_metadata",
                )
            }
        return {
            "id": channel_id,
            "type": 0,
            "guild_id": self.guild_id,
            "name": self.channels[channel_id],
            "position": 0,
            "permission_overwrites": [],
        }

    # ----- REST -----

    async def _put_commands(self, request: web.Request) -> web.Response:
        guild_id = request.match_info.get("guild_id")
        synced = [
            {
                **cmd,
                "id": self.snowflake(),
                "application_id": self.app_id,
                "version": "1",
                **({"guild_id": guild_id} if guild_id else {}),
            }
            for cmd in request[BODY] or []
        ]
        if guild_id:
            self.guild_commands[guild_id] = synced
        else:
            self.global_commands = synced
        return json_response(synced)

    async def _get_commands(self, request: web.Request) -> web.Response:
        guild_id = request.match_info.get("guild_id")
        return json_response(
            self.guild_commands.get(guild_id, []) if guild_id else self.global_commands
        )

    def _message(self, record: FakeInteraction, mid: str, content: str, flags: int) -> Json:
        channel = record.payload["channel"]
        return {
            **p.message(
                message_id=mid,
                channel_id=channel["id"],
                author=self.bot,
                content=content,
                guild_id=record.payload.get("guild_id"),
                flags=flags,
            ),
            "webhook_id": self.app_id,
            "interaction": {
                "id": record.id,
                "type": record.payload["type"],
                "name": (record.payload.get("data") or {}).get("name", ""),
                "user": record.user,
            },
        }

    async def _callback(self, request: web.Request) -> web.StreamResponse:
        record = self.interactions.get(request.match_info["interaction_id"])
        if record is None or record.token != request.match_info["token"]:
            return error_response(404, 10062, "Unknown interaction")
        if record.callbacks:
            return error_response(400, 40060, "Interaction has already been acknowledged.")
        body: Json = request[BODY] or {}
        record.callbacks.append(body)
        kind, data = body.get("type"), body.get("data") or {}
        if kind == 8:
            return web.Response(status=204)
        record.original_flags = int(data.get("flags") or 0)
        if kind == 4:
            if (error := content_error(data)) is not None:
                return error
            record.original.append(data.get("content") or "")
        mid = self.snowflake()
        interaction = {
            "id": record.id,
            "type": record.payload["type"],
            "response_message_id": mid,
            "response_message_loading": kind == 5,
            "response_message_ephemeral": record.ephemeral,
        }
        resource: Json = {"type": kind}
        if kind in (4, 5):
            resource["message"] = self._message(
                record, mid, record.response_text or "", record.original_flags
            )
        return json_response({"interaction": interaction, "resource": resource})

    async def _followup(self, request: web.Request) -> web.Response:
        record = self._by_token.get(request.match_info["token"])
        if record is None:
            return error_response(404, 10015, "Unknown Webhook")
        body: Json = request[BODY] or {}
        if (error := content_error(body)) is not None:
            return error
        record.followups.append(body)
        return json_response(
            self._message(
                record, self.snowflake(), body.get("content") or "", int(body.get("flags") or 0)
            )
        )

    async def _get_original(self, request: web.Request) -> web.Response:
        record = self._by_token.get(request.match_info["token"])
        if record is None or not record.callbacks:
            return error_response(404, 10008, "Unknown Message")
        return json_response(
            self._message(record, record.id, record.response_text or "", record.original_flags)
        )

    async def _edit_original(self, request: web.Request) -> web.Response:
        record = self._by_token.get(request.match_info["token"])
        if record is None or not record.callbacks:
            return error_response(404, 10008, "Unknown Message")
        body: Json = request[BODY] or {}
        if "content" in body:
            if (error := content_error(body)) is not None:
                return error
            record.original.append(body["content"] or "")
        return json_response(
            self._message(record, record.id, record.response_text or "", record.original_flags)
        )
