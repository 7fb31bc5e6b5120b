"""``QuotaManager``: per-user limits in front of a per-model mirror of the shared account.

Window model (the meters live in ``bot.limits.meters``)
-------------------------------------------------------
* **Account mirror**, one per model (``bot.limits.account``). Groq refills each window
  continuously (reset = (limit − remaining) × window ÷ limit), and so does the mirror:
  a ``RefillBucket`` per dimension, minute and day windows alike. A request reserves
  prompt + max output when admitted, which is what Groq checks it against, and
  ``settle`` replaces that by the real usage (or keeps it when there is none, or while
  the server may be keeping the output cap charged: see ``ModelAccount``).
  Why it does not run ahead of the server: both buckets drain at the same rate, and
  the mirror sees every change of ours *earlier* in the direction that fills it — our
  reservation is made before the server counts the request, our refund after the
  server's (the answer's end reaches us after it left the server). Adding earlier or
  taking away later never leaves a draining bucket lower, so the mirror stays at or
  above the server's level for our own use. The exceptions are small and bounded:
  a reservation drains while it travels, so the server can be ahead by refill rate ×
  the spread of request latencies (about 10 tokens of a 6,000 TPM limit per 100 ms;
  a queued request waits the recent travel time past its moment to cover it), and a
  prompt the server counts larger than our estimate; the headers correct both.
  Other clients on the key are what the headers are for: every response's
  ``x-ratelimit-*`` pair (Groq: requests per *day*, tokens per *minute*) and a 429's
  "Used N" lift the mirror to the server's level (never lower it: our reservations for
  requests still in flight may not be in its count yet), what is above our own use
  is counted as theirs and kept as headroom, header limits are adopted (and a paid
  tier inferred from them), a 429's message names the real limit of the dimension it
  hit, and its ``retry-after`` pauses the model's queue for that long.
* **Per-user limits**, one set per user and model, by default ``user_share`` of that
  model's account limits: fixed windows — minutes on the minute, days at 00:00 UTC.
  Chosen over continuous refill so a refusal names one exact reset ("try again in
  23 s"), the once-per-window notice has a window to key on, and "today" is the UTC day
  the usage ledger uses too. Plus a cap on each user's requests in flight. Admins skip
  these, never the account mirror.

``admit`` checks the user first and refuses at once (``QuotaExceeded(scope="user")``,
``notify`` False after the first refusal per user, model, dimension and window). Then
the account: with nobody queued and room in the budget it reserves without awaiting;
otherwise the request joins the model's FIFO queue (first come, first served across
users), ``on_wait`` hears the estimated wait, and past ``max_queue_wait_s`` it fails with
``QuotaExceeded(scope="account")``. ``settle`` replaces the reservation by the real
usage everywhere (or keeps it when there is none).

Limiter time is ``clock.time()`` (epoch seconds): counters are persisted with epoch
window starts and day windows align to UTC midnight. Check-and-reserve is a handful of
dict lookups, O(1) in the number of users.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bot.errors import QuotaExceeded, StoreError
from bot.limits.account import ModelAccount
from bot.limits.config import QuotaConfig
from bot.limits.report import (
    AccountStatus,
    ModelUsage,
    UserUsage,
    account_status,
    busy_text,
    format_usage,
    queue_full_text,
    timed_out_text,
    too_large_text,
    user_dimensions,
    user_limit_text,
)
from bot.limits.table import DIMENSIONS, LimitTable, ModelLimits
from bot.limits.users import UserCounters
from bot.ports import Clock, QuotaCounterStore
from bot.ratelimit import Waiter, WaitQueue
from bot.types import QuotaCounter, RateLimitSnapshot, Usage, UserRef, WaitReason

__all__ = ["REANNOUNCE_S", "Admission", "OnWait", "QuotaManager", "predicted_wait", "queue_timeout"]

log = logging.getLogger(__name__)

OnWait = Callable[[float, WaitReason], Awaitable[None]]
# Re-announce the wait when its end moves later by more than this (e.g. a 429 pause).
REANNOUNCE_S = 5.0


class _UserState:
    """One user across models: requests admitted and not settled (``in_flight``; those
    past the account queue are ``running``) and the user's own line of waiting messages."""

    __slots__ = ("full_noticed", "in_flight", "line", "models", "running")

    def __init__(self) -> None:
        self.in_flight = 0
        self.running = 0
        self.full_noticed = False
        self.line = WaitQueue()
        self.models: dict[str, UserCounters] = {}


@dataclass(slots=True, eq=False)
class Admission:
    """What ``admit`` reserved: the ``Reservation`` the engine settles once (again is a
    no-op); its methods are ``QuotaManager.settle`` and ``note_retry`` on itself.

    ``tokens`` is the account reservation (prompt + max output); ``user_tokens`` what the
    user's token windows were charged at admission (the prompt), set right at settle."""

    manager: QuotaManager = field(repr=False)
    user_key: str
    model: str
    tokens: int
    user_tokens: int
    state: _UserState
    counters: UserCounters
    minute_start: float
    day_start: float
    waited_s: float = 0.0  # in all: the user's own line, then the account's queue
    account_wait_s: float = 0.0  # the account's queue only (``max_queue_wait_s`` bounds it)
    sent: bool = False
    settled: bool = False

    async def settle(self, usage: Usage | None) -> None:
        await self.manager.settle(self, usage)

    def note_retry(self) -> None:
        self.manager.note_retry(self)


class QuotaManager:
    """Implements ``QuotaGate``; also persists counters and feeds ``/usage``."""

    def __init__(
        self,
        *,
        config: QuotaConfig,
        clock: Clock,
        store: QuotaCounterStore | None = None,
        table: LimitTable | None = None,
    ) -> None:
        self._config = config
        self._clock = clock
        self._store = store
        self._table = table or config.table()
        self._accounts: dict[str, ModelAccount] = {}
        self._users: dict[str, _UserState] = {}
        self._dirty: set[tuple[str, str]] = set()  # (user key, model) changed since flush
        self._last_flush = clock.time()
        self._flushing = False
        self._pruned_day = -math.inf

    # ----- QuotaGate -----

    async def admit(
        self,
        user: UserRef,
        model: str,
        estimated_tokens: int,
        *,
        user_tokens: int | None = None,
        on_wait: OnWait | None = None,
    ) -> Admission:
        """Reserve one request of ``estimated_tokens`` (prompt + max output) for ``user``
        on ``model``; ``user_tokens`` (default: all of it) is what counts against the
        user's own token windows until ``settle`` replaces it by the real usage.

        Waits, telling ``on_wait``, behind the user's own earlier messages, for a user
        window that resets within ``max_queue_wait_s``, and for the shared account.
        Raises ``QuotaExceeded``: scope "user" when the user's limit resets later than
        that or their line is full, scope "account" when the shared budget would not
        free up in time.
        """
        now = self._clock.time()
        tokens = max(0, int(estimated_tokens))
        mine = tokens if user_tokens is None else max(0, min(tokens, int(user_tokens)))
        account = self._account(model)
        refusal = too_large(account, tokens, self._config)
        if refusal is not None:
            raise refusal
        sid = user.storage_id()
        state = self._user(sid)
        counters = self._counters(state, model)
        admin = self._config.is_admin(user.platform.value, user.user_id)
        waited = 0.0
        if not admin and (state.line or self._user_block(state, counters, account, mine, now)):
            waited = await self._user_turn(sid, state, counters, account, mine, on_wait)
            now = self._clock.time()
        minute, day = counters.add(mine, now)
        state.in_flight += 1
        self._dirty.add((sid, model))
        admission = Admission(self, sid, model, tokens, mine, state, counters, minute, day)
        admission.waited_s = waited
        if account.can_pass(tokens, now):
            account.budget.take(tokens, now, self._config.drain_hold_s)
        else:
            try:
                admission.account_wait_s = await self._queue(account, tokens, state, now, on_wait)
                admission.waited_s += admission.account_wait_s
            except BaseException:
                self._release_user(admission)
                raise
        admission.sent = True
        state.running += 1
        if state.line:
            state.line.wake_head()  # the user's next message may queue for the account now
        return admission

    async def settle(self, admission: Admission, usage: Usage | None) -> None:
        """Reconcile a reservation with the real usage (None: count what was reserved).

        A request the server charged nothing for (it failed before its first token) is
        taken back from the user's windows entirely. The user's windows are saved now,
        so a crash right after an answer cannot hand that request back."""
        if admission.settled:
            return
        admission.settled = True
        now = self._clock.time()
        state = admission.state
        state.in_flight -= 1
        state.running -= admission.sent
        state.full_noticed = False
        account = self._account(admission.model)
        final = admission.tokens if usage is None else usage.total_tokens
        account.commit(admission.tokens, usage, now)
        if usage is not None:
            account.note_usage(admission.tokens, final)
        admission.counters.settle(
            admission.user_tokens,
            None if usage is None else usage.total_tokens,
            admission.minute_start,
            admission.day_start,
        )
        self._dirty.add((admission.user_key, admission.model))
        state.line.wake_head()  # the user's next message may go now
        account.waiters.wake_head()  # the head's wait is now computable (or shorter)
        await self._save_user(admission.user_key, admission.model, now)
        await self._maybe_flush(now)

    def note_retry(self, admission: Admission) -> None:
        """The client sent the admitted request again: Groq counts every attempt
        against the account's request limits, so the mirror does too."""
        if not admission.settled:
            self._account(admission.model).budget.take_request(self._clock.time())

    def observe(self, snapshot: RateLimitSnapshot) -> None:
        """Take in one response's rate-limit headers and 429 message (see
        ``ModelAccount.observe``), and a 429's retry-after."""
        account = self._account(snapshot.model)
        now = self._clock.time()
        if account.observe(snapshot, self._config.requests_header_dimension, now):
            account.user_limits = self._config.user_limits(account.limits)
        if snapshot.retry_after_s is not None and snapshot.retry_after_s > 0:
            account.paused_until = max(account.paused_until, now + snapshot.retry_after_s)
            log.warning("%s: 429, pausing its queue %.1f s", account.model, snapshot.retry_after_s)
        if snapshot.remaining_requests is not None or snapshot.remaining_tokens is not None:
            account.reported = snapshot
        account.waiters.wake_head()

    def predict_wait(self, model: str, estimated_tokens: int) -> tuple[float, str]:
        """What a newcomer of ``estimated_tokens`` on ``model`` would wait for the account
        now, behind everyone queued, and why (see ``QuotaGate.predict_wait``)."""
        return predicted_wait(
            self._account(model), estimated_tokens, self._clock.time(), self._config
        )

    def max_wait_s(self) -> float:
        return self._config.max_queue_wait_s

    def limits_for(self, model: str) -> tuple[ModelLimits, ModelLimits]:
        """The account limits the mirror assumes for ``model`` now, and a user's share."""
        account = self._account(model)
        return account.limits, account.user_limits

    # ----- persistence -----

    async def load(self) -> None:
        """Merge persisted counters (today's and yesterday's rows) into memory."""
        if self._store is None:
            return
        now = self._clock.time()
        for row in await self._store.load_quota_counters(self._day_start(now) - self._config.day_s):
            if row.dimension not in DIMENSIONS:
                continue
            if row.subject.startswith("account:"):
                budget = self._account(row.subject[8:]).budget
                budget.restore(row.dimension, row.used, row.window_start, now)
            elif row.subject.startswith("user:"):
                sid, sep, model = row.subject[5:].rpartition("@")
                if sep and sid and model:
                    window = self._counters(self._user(sid), model).window(row.dimension)
                    window.restore(row.window_start, row.used, now)

    async def flush(self) -> None:
        """Save account buckets and changed user windows; prune rows of earlier days."""
        if self._store is None:
            return
        now = self._clock.time()
        rows: list[QuotaCounter] = []
        for account in self._accounts.values():
            rows += account.budget.to_rows(f"account:{account.model}", now)
        dirty, self._dirty = self._dirty, set()
        for sid, model in dirty:
            rows += self._users[sid].models[model].to_rows(f"user:{sid}@{model}", now)
        try:
            if rows:
                await self._store.save_quota_counters(rows)
        except BaseException:
            self._dirty |= dirty
            raise
        self._last_flush = now
        day = self._day_start(now)
        if day > self._pruned_day:
            # After the save above, every row still needed starts at or after ``day``.
            await self._store.prune_quota_counters(day)
            self._pruned_day = day
            self._evict_idle(now)

    async def aclose(self) -> None:
        await self.flush()

    # ----- reporting -----

    def snapshot_for(self, user: UserRef, current_model: str | None = None) -> UserUsage:
        """The user's use of each model they used, and of ``current_model`` (the one
        their next turn uses; the configured default when not given)."""
        now = self._clock.time()
        state = self._users.get(user.storage_id()) or _UserState()
        admin = self._config.is_admin(user.platform.value, user.user_id)
        models = dict(state.models)
        default = current_model or self._config.default_model
        if default and default not in models:
            models[default] = UserCounters(minute_s=self._config.minute_s, day_s=self._config.day_s)
        usage = tuple(
            ModelUsage(m, user_dimensions(c, None if admin else self._account(m).user_limits, now))
            for m, c in sorted(models.items())
        )
        return UserUsage(user, admin, state.in_flight, self._config.user_max_in_flight, usage)

    def account_status(self) -> list[AccountStatus]:
        """Each model's local mirror, the API's last report on it, and which limits the
        mirror assumes and why."""
        now = self._clock.time()
        return [
            account_status(
                account, len(account.waiters), self._config.requests_header_dimension, now
            )
            for model, account in sorted(self._accounts.items())
        ]

    async def report(self, user: UserRef, *, admin: bool, current_model: str | None = None) -> str:
        """The ``/usage`` text."""
        return format_usage(
            self.snapshot_for(user, current_model), self.account_status() if admin else None
        )

    # ----- internals -----

    def _day_start(self, now: float) -> float:
        return math.floor(now / self._config.day_s) * self._config.day_s

    def _account(self, model: str) -> ModelAccount:
        account = self._accounts.get(model)
        if account is None:
            account = self._accounts[model] = ModelAccount.for_model(
                model, self._table, self._config
            )
        return account

    def _user(self, sid: str) -> _UserState:
        state = self._users.get(sid)
        if state is None:
            state = self._users[sid] = _UserState()
        return state

    def _counters(self, state: _UserState, model: str) -> UserCounters:
        counters = state.models.get(model)
        if counters is None:
            self._account(model)
            counters = UserCounters(minute_s=self._config.minute_s, day_s=self._config.day_s)
            state.models[model] = counters
        return counters

    def _user_block(
        self,
        state: _UserState,
        counters: UserCounters,
        account: ModelAccount,
        tokens: int,
        now: float,
    ) -> tuple[WaitReason, float, str] | None:
        """What keeps the user's next request back: their requests in flight, or one of
        theirs still waiting for the account (a wait of ``inf``: it ends when one is
        sent or settles), or the window that blocks longest.

        One waiting request per user keeps the account queue at one entry per waiting
        user: its wait (what ``max_queue_wait_s`` bounds) is then one round of the
        users, and a user's further messages wait in their own line, visibly, rather
        than being refused for a queue they themselves made long."""
        if state.in_flight >= self._config.user_max_in_flight or state.in_flight > state.running:
            return WaitReason.YOUR_TURN, math.inf, "in flight"
        blocked = counters.blocking(account.user_limits, tokens, now)
        if blocked is None:
            return None
        return WaitReason.YOUR_LIMIT, blocked[1], blocked[0]

    async def _user_turn(
        self,
        sid: str,
        state: _UserState,
        counters: UserCounters,
        account: ModelAccount,
        tokens: int,
        on_wait: OnWait | None,
    ) -> float:
        """Wait in the user's own line until this message is first and the user's limits
        admit it; return the seconds waited. A full line, or a window that resets later
        than ``max_queue_wait_s``, is refused instead."""
        if len(state.line) >= self._config.user_max_queued:
            notify, state.full_noticed = not state.full_noticed, True
            raise QuotaExceeded(
                queue_full_text(len(state.line)),
                scope="user",
                notify=notify,
                detail=f"{sid} line full ({len(state.line)} waiting)",
            )
        wake = asyncio.Event()
        ticket = Waiter(wake.set)
        state.line.join(ticket)
        start = self._clock.time()
        told: tuple[WaitReason, float] | None = None
        try:
            while True:
                now = self._clock.time()
                block: tuple[WaitReason, float, str] | None
                if state.line.head() is ticket:
                    block = self._user_block(state, counters, account, tokens, now)
                    if block is None:
                        return now - start
                else:
                    block = WaitReason.YOUR_TURN, math.inf, "behind"
                reason, wait, dim = block
                if reason is WaitReason.YOUR_LIMIT and wait > self._config.max_queue_wait_s:
                    raise user_refusal(sid, counters, account, dim, tokens, wait, now)
                if on_wait is not None and (
                    told is None or told[0] is not reason or now + wait > told[1] + REANNOUNCE_S
                ):
                    told = reason, now + wait
                    await on_wait(wait if wait < math.inf else 0.0, reason)
                await self._sleep_or_wake(wake, wait)
        finally:
            state.line.leave(ticket)

    def _release_user(self, admission: Admission) -> None:
        """Undo a reservation whose request never ran (timed out or cancelled)."""
        admission.settled = True
        admission.state.in_flight -= 1
        admission.counters.release(
            admission.user_tokens, admission.minute_start, admission.day_start
        )
        self._dirty.add((admission.user_key, admission.model))
        admission.state.line.wake_head()

    async def _queue(
        self,
        account: ModelAccount,
        tokens: int,
        state: _UserState,
        now: float,
        on_wait: OnWait | None,
    ) -> float:
        """Wait in the model's queue, then reserve; return the seconds waited. Across
        users the queue is first come, first served, except that a user with fewer
        requests running goes first (``WaitQueue(ranked=True)``)."""
        wait, dim = account.estimate(tokens, now)
        max_wait = self._config.max_queue_wait_s
        # A TPM-bound wait is tried, never refused at the door: reservations (prompt +
        # max output) overstate what queued requests will really use.
        if wait > max_wait and dim != "tpm":
            raise QuotaExceeded(
                busy_text(account.model, wait, dim),
                scope="account",
                retry_in_s=wait,
                detail=f"{dim} wait {wait:.1f}s",
            )
        wake = asyncio.Event()
        waiter = Waiter(wake.set, tokens, rank=lambda: state.running)
        account.waiters.join(waiter)
        wait = min(wait, max_wait)
        start, deadline, eta = now, now + max_wait, now + wait
        try:
            if on_wait is not None:
                await on_wait(wait, WaitReason.CAPACITY)
            while True:
                now = self._clock.time()
                delay = deadline - now
                if account.waiters.head() is waiter:
                    need = account.need(tokens, now)
                    if need <= 0:
                        account.budget.take(tokens, now, self._config.drain_hold_s)
                        return now - start
                    # Give up early only if even the soonest case is too late: requests in
                    # flight may finish any moment having used little (settle wakes us).
                    soonest = account.need(tokens, now, pending_share=0.0)
                    if delay <= 0 or soonest > delay:
                        raise queue_timeout(account.model, now - start, max(soonest, need))
                    if on_wait is not None and now + need > eta + REANNOUNCE_S:
                        eta = now + need
                        await on_wait(need, WaitReason.CAPACITY)
                    # Past the computed moment by what the server is ahead (requests'
                    # travel, see ``AccountBudget``) and a few ms: the server counts
                    # that instant in its own arithmetic and may round over its limit.
                    spare = self._config.spare_s + account.budget.travel_s(now)
                    delay = min(need + spare, delay)
                elif delay <= 0:
                    raise queue_timeout(account.model, now - start, max_wait)
                await self._sleep_or_wake(wake, delay)
        finally:
            account.waiters.leave(waiter)

    async def _sleep_or_wake(self, wake: asyncio.Event, seconds: float) -> None:
        """Sleep on the injected clock for ``seconds`` (``inf``: for good) or until
        ``wake`` is set."""
        if not wake.is_set() and seconds == math.inf:
            await wake.wait()
        elif not wake.is_set():
            sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
            waker = asyncio.ensure_future(wake.wait())
            try:
                await asyncio.wait((sleeper, waker), return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                waker.cancel()
                await asyncio.gather(sleeper, waker, return_exceptions=True)
        wake.clear()

    async def _save_user(self, sid: str, model: str, now: float) -> None:
        """Save one user's windows for ``model`` now (a failure leaves them to the next
        flush: the answer has been given, so it is not failed for this)."""
        if self._store is None:
            return
        rows = self._users[sid].models[model].to_rows(f"user:{sid}@{model}", now)
        try:
            if rows:
                await self._store.save_quota_counters(rows)
        except StoreError as exc:
            log.warning("could not save quota counters (will retry): %s", exc.detail or exc)
            return
        self._dirty.discard((sid, model))

    async def _maybe_flush(self, now: float) -> None:
        if self._store is None or self._flushing:
            return
        if now - self._last_flush < self._config.flush_interval_s:
            return
        self._flushing = True
        try:
            await self.flush()
        except StoreError as exc:
            log.warning("could not save quota counters (will retry): %s", exc.detail or exc)
        finally:
            self._flushing = False

    def _evict_idle(self, now: float) -> None:
        """Forget users idle all day with nothing in flight (once a day, off the hot path)."""
        idle = [
            sid
            for sid, state in self._users.items()
            if state.in_flight == 0
            and all(c.rpd.used(now) == 0 for c in state.models.values())
            and not any((sid, m) in self._dirty for m in state.models)
        ]
        for sid in idle:
            del self._users[sid]


def user_refusal(
    sid: str,
    counters: UserCounters,
    account: ModelAccount,
    dim: str,
    tokens: int,
    wait: float,
    now: float,
) -> QuotaExceeded:
    """The refusal of a request whose user window ``dim`` resets in ``wait`` seconds,
    later than the queue may wait (both quota backings)."""
    limit = account.user_limits.get(dim) or 0
    used = counters.window(dim).used(now)
    return QuotaExceeded(
        user_limit_text(dim, limit, used, tokens, wait, account.model),
        scope="user",
        retry_in_s=wait,
        notify=counters.first_notice(dim, now),
        detail=f"{sid} {dim} {used:.0f}/{limit} on {account.model}",
    )


def too_large(account: ModelAccount, tokens: int, config: QuotaConfig) -> QuotaExceeded | None:
    """The refusal of a request larger than the model's tokens per minute (it could
    never pass), else None (both quota backings)."""
    tpm = account.budget.buckets.get("tpm")
    if tpm is None or tokens <= tpm.limit:
        return None
    return QuotaExceeded(
        too_large_text(account.model, tokens, int(tpm.limit), config.max_output_tokens),
        scope="account",
        detail=f"{tokens} > tpm {tpm.limit:.0f} on {account.model}",
    )


def queue_timeout(model: str, waited: float, more: float) -> QuotaExceeded:
    # Given up at once (the wait grew past the maximum): "timed out after 0 s" would
    # read oddly, so say the bot is busy instead.
    text = timed_out_text(model, waited, more) if waited >= 1 else busy_text(model, more, "")
    return QuotaExceeded(
        text,
        scope="account",
        retry_in_s=more,
        detail=f"queue timeout after {waited:.1f}s",
    )


def predicted_wait(
    account: ModelAccount, estimated_tokens: int, now: float, config: QuotaConfig
) -> tuple[float, str]:
    """How long a request of ``estimated_tokens`` would wait for ``account`` at ``now``,
    and the limit that binds ("" when it fits now); a request larger than the model's
    tokens per minute never fits: ``(inf, "size")``."""
    tokens = max(0, int(estimated_tokens))
    tpm = account.budget.buckets.get("tpm")
    if tpm is not None and tokens > tpm.limit:
        return math.inf, "size"
    if account.can_pass(tokens, now):
        return 0.0, ""
    wait, dim = account.estimate(tokens, now)
    if dim == "pause":
        # A 429's pause hides which window it was for; the mirror, lifted by that 429's
        # "Used N", still shows it when it was a day's (worth saying so).
        held, held_dim = account.budget.estimate(1, tokens, now)
        if held_dim in ("rpd", "tpd") and held > config.max_queue_wait_s:
            dim = held_dim
    return wait, dim
