"""Who may use the bot, and where: one allow/deny policy for every platform.

An adapter describes the request (``Requester``: the user, their roles, the places it
happened in, whether it is a direct message) and its settings describe the lists
(``AccessPolicy``). The rules are the same everywhere: admins pass; a block always wins
over an allow; a people list that is set (users or roles) must match; direct messages
are governed by ``allow_dms`` and the people lists only; otherwise every kind of place
(e.g. workspace, then channel) must pass its own lists.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

__all__ = ["AccessPolicy", "AllowDeny", "Requester"]


def _ids(values: Iterable[object]) -> frozenset[str]:
    return frozenset(s for s in (str(v).strip() for v in values) if s)


@dataclass(frozen=True, slots=True)
class AllowDeny:
    """An allow list (empty: everyone) and a block list for one kind of id."""

    allowed: frozenset[str] = frozenset()
    blocked: frozenset[str] = frozenset()

    @classmethod
    def of(cls, allowed: Collection[str] = (), blocked: Collection[str] = ()) -> AllowDeny:
        return cls(_ids(allowed), _ids(blocked))

    def passes(self, ids: frozenset[str]) -> bool:
        """None of ``ids`` blocked and, when the allow list is set, one of them in it."""
        return not (ids & self.blocked) and (not self.allowed or bool(ids & self.allowed))


@dataclass(frozen=True, slots=True)
class Requester:
    """One request as the policy sees it.

    ``places`` lines up with ``AccessPolicy.places``: for each kind of place, the ids it
    happened in (a thread and its parent channel both count, so listing a channel
    covers its threads).
    """

    user_id: str
    role_ids: frozenset[str] = frozenset()
    places: tuple[frozenset[str], ...] = ()
    is_dm: bool = False
    is_admin: bool = False

    @classmethod
    def of(
        cls,
        user_id: object,
        *,
        role_ids: Iterable[object] = (),
        places: Iterable[Iterable[object]] = (),
        is_dm: bool = False,
        is_admin: bool = False,
    ) -> Requester:
        """Build from platform ids of any type (Discord's are ints)."""
        return cls(str(user_id), _ids(role_ids), tuple(_ids(p) for p in places), is_dm, is_admin)


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """The allow/deny lists of one platform."""

    allow_dms: bool = True
    users: AllowDeny = field(default_factory=AllowDeny)
    roles: AllowDeny = field(default_factory=AllowDeny)
    places: tuple[AllowDeny, ...] = ()

    def allows(self, who: Requester) -> bool:
        """Whether ``who`` may use the bot here (the rules in the module docstring)."""
        if who.is_admin:
            return True
        user = frozenset((who.user_id,))
        if user & self.users.blocked or who.role_ids & self.roles.blocked:
            return False
        if (self.users.allowed or self.roles.allowed) and not (
            user & self.users.allowed or who.role_ids & self.roles.allowed
        ):
            return False
        if who.is_dm:
            return self.allow_dms
        return all(lists.passes(ids) for lists, ids in zip(self.places, who.places, strict=False))
