"""``FleetQuota``: the ``QuotaGate`` of a fleet of processes on one API key.

The same rules as ``QuotaManager`` (read its docstring first), with the account mirror,
the fair queue and the users' windows held in PostgreSQL (``bot.limits.fleet_db``)
instead of memory, so they hold for every process on the key:

* **Account mirror.** Each step loads the model's ``ModelAccount`` state from its row
  under ``SELECT … FOR UPDATE``, runs the very same arithmetic (``RefillBucket`` refill,
  reservations of prompt + cap, refunds at settle, ``observe`` of headers and 429s,
  retry-after pauses, headroom for foreign use), and writes it back in the same
  transaction: atomic across processes, and never a second copy of the math. Time is
  the database's clock, so processes with skewed clocks agree on a bucket's refill.
* **Fair FIFO across users, fleet-wide.** Admitted requests are rows; the ones waiting
  for the account are the queue, served a user with fewer requests running first, then
  in arrival order. Waiters in every process are woken by ``LISTEN/NOTIFY`` when
  capacity frees or the head changes (``wake="notify"``, the default), or poll with
  jitter (``wake="poll"``); both re-check at least every ``_SAFETY_POLL_S``.
* **Per-user limits fleet-wide**: a user's windows are a row, their requests in flight
  are their request rows. A user's own line (messages waiting behind their others) is
  per process; across processes their messages are admitted as the limits allow.
* **Crashes.** Every process renews a lease every ``lease_s / 3``; any other process
  reaps one whose lease ran out: its reservations count as used in full (the requests
  may have reached the server) and end, its queued requests are taken back from their
  users' windows. A dead process's queue entries are passed over once its lease has run
  out; everything of it is released within ``lease_s`` × 4/3 of the crash.
* **Failure policy: closed.** When the database cannot be reached while admitting, the
  request is refused with a "can't check the shared quota" text (the engine logs one
  line): admitting blind could push the whole fleet's key into 429s. A settle that
  fails is retried with each heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from bot.errors import QuotaExceeded, StoreError
from bot.limits.account import ModelAccount
from bot.limits.config import QuotaConfig
from bot.limits.fleet_db import FleetLedger, Tx
from bot.limits.quota import (
    REANNOUNCE_S,
    OnWait,
    predicted_wait,
    queue_timeout,
    too_large,
    user_refusal,
)
from bot.limits.report import (
    ModelUsage,
    UserUsage,
    account_status,
    busy_text,
    format_usage,
    queue_full_text,
    user_dimensions,
)
from bot.limits.table import LimitTable, ModelLimits
from bot.limits.users import UserCounters
from bot.ports import Clock
from bot.ratelimit import Waiter, WaitQueue
from bot.types import RateLimitSnapshot, Usage, UserRef, WaitReason

__all__ = ["FleetAdmission", "FleetQuota", "Wake"]

log = logging.getLogger(__name__)

Wake = Literal["notify", "poll"]
# Waiters look again at least this often even with LISTEN/NOTIFY: a notification
# lost with a dropped listener connection costs at most this much.
_SAFETY_POLL_S = 2.0
UNREACHABLE_TEXT = (
    "I can't check the shared usage quota right now (its database is unreachable), so "
    "your message was not sent to the model. Please try again in a minute."
)


@dataclass(slots=True, eq=False)
class FleetAdmission:
    """What ``FleetQuota.admit`` reserved: the engine's ``Reservation``."""

    quota: FleetQuota = field(repr=False)
    request_id: int
    user_key: str
    model: str
    tokens: int
    user_tokens: int
    waited_s: float = 0.0
    settled: bool = False

    async def settle(self, usage: Usage | None) -> None:
        await self.quota.settle(self, usage)

    def note_retry(self) -> None:
        self.quota.note_retry(self)


@dataclass(slots=True)
class _Step:
    """One attempt's outcome: admitted, or wait ``wait`` s (``inf``: until woken)."""

    request_id: int | None = None
    admitted: bool = False
    reason: WaitReason = WaitReason.CAPACITY
    wait: float = math.inf
    soonest: float = math.inf  # the account wait should requests in flight use little
    refusal: QuotaExceeded | None = None


class FleetQuota:
    """Implements ``QuotaGate`` over a ``FleetLedger``; also feeds ``/usage``."""

    def __init__(
        self,
        *,
        config: QuotaConfig,
        clock: Clock,
        ledger: FleetLedger,
        wake: Wake = "notify",
        poll_s: float = 0.1,
        table: LimitTable | None = None,
    ) -> None:
        self._config = config
        self._clock = clock
        self._ledger = ledger
        self.wake = wake
        self._poll_s = poll_s
        self._table = table or config.table()
        self._accounts: dict[str, ModelAccount] = {}  # the last state seen, per model
        self._lines: dict[str, WaitQueue] = {}  # each user's own line, in this process
        self._full_noticed: set[str] = set()
        self._events: set[asyncio.Event] = set()  # one per waiting admit
        self._observations: list[tuple[str, RateLimitSnapshot | None]] = []
        self._observer: asyncio.Task[None] | None = None
        self._unsettled: list[tuple[FleetAdmission, Usage | None]] = []
        self._unreleased: list[tuple[int, str]] = []  # (request id, model)
        self._heartbeat: asyncio.Task[None] | None = None

    @classmethod
    def create(
        cls,
        dsn: str,
        *,
        config: QuotaConfig,
        clock: Clock,
        lease_s: float = 30.0,
        pool_size: int = 4,
        wake: Wake = "notify",
    ) -> FleetQuota:
        process = f"{uuid.uuid4().hex[:12]}"
        ledger = FleetLedger(dsn, process_id=process, lease_s=lease_s, pool_size=pool_size)
        return cls(config=config, clock=clock, ledger=ledger, wake=wake)

    @property
    def process_id(self) -> str:
        return self._ledger.process_id

    # ----- lifecycle -----

    async def open(self) -> None:
        """Connect, register this process, listen for wake-ups, start the heartbeat."""
        try:
            await self._ledger.open()
            if self.wake == "notify":
                await self._ledger.listen(self._heard)
        except StoreError:
            await self._ledger.aclose()
            raise
        self._heartbeat = asyncio.create_task(self._beat(), name="quota-heartbeat")
        log.info(
            "quota: shared by every process on %s (this one %s; wake-ups by %s; lease %.0f s)",
            self._ledger.server,
            self.process_id,
            "LISTEN/NOTIFY" if self.wake == "notify" else "polling",
            self._ledger.lease_s,
        )

    async def aclose(self) -> None:
        """Stop the heartbeat, release what this process still holds, disconnect."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        if self._observer is not None:
            await asyncio.gather(self._observer, return_exceptions=True)
        try:
            await self._retry_unsettled()
            await self._reap(self.process_id, expired_only=False)
        except StoreError as exc:
            log.warning("quota: could not release this process's rows: %s", exc.detail)
        await self._ledger.aclose()

    # ----- QuotaGate -----

    async def admit(
        self,
        user: UserRef,
        model: str,
        estimated_tokens: int,
        *,
        user_tokens: int | None = None,
        on_wait: OnWait | None = None,
    ) -> FleetAdmission:
        """As ``QuotaManager.admit``, for the whole fleet."""
        tokens = max(0, int(estimated_tokens))
        mine = tokens if user_tokens is None else max(0, min(tokens, int(user_tokens)))
        sid = user.storage_id()
        admin = self._config.is_admin(user.platform.value, user.user_id)
        line = self._lines.setdefault(sid, WaitQueue())
        if len(line) >= max(1, self._config.user_max_queued):
            notify = sid not in self._full_noticed
            self._full_noticed.add(sid)
            raise QuotaExceeded(
                queue_full_text(len(line)),
                scope="user",
                notify=notify,
                detail=f"{sid} line full ({len(line)} waiting)",
            )
        wake = asyncio.Event()
        ticket = Waiter(wake.set)
        line.join(ticket)
        self._events.add(wake)
        start = self._clock.now()
        request_id: int | None = None
        admitted = False
        try:
            request_id, wait = await self._user_turn(
                sid, model, tokens, mine, admin, line, ticket, wake, on_wait
            )
            line.leave(ticket)
            if request_id is not None and wait is not None:
                # Announced here, where a cancellation still releases the request.
                deadline = self._clock.now() + self._config.max_queue_wait_s
                if on_wait is not None:
                    await on_wait(min(wait, self._config.max_queue_wait_s), WaitReason.CAPACITY)
                await self._account_turn(request_id, model, tokens, deadline, wake, on_wait)
            admitted = True
        except StoreError as exc:
            raise QuotaExceeded(
                UNREACHABLE_TEXT, scope="account", retry_in_s=60.0, detail=exc.detail
            ) from exc
        finally:
            line.leave(ticket)
            self._events.discard(wake)
            if request_id is not None and not admitted:
                await asyncio.shield(self._release(request_id, model))
        assert request_id is not None
        admission = FleetAdmission(self, request_id, sid, model, tokens, mine)
        admission.waited_s = self._clock.now() - start
        return admission

    async def settle(self, admission: FleetAdmission, usage: Usage | None) -> None:
        """Replace the reservation by the real usage, fleet-wide (as ``QuotaManager``)."""
        if admission.settled:
            return
        admission.settled = True
        self._full_noticed.discard(admission.user_key)
        try:
            await self._settle(admission, usage)
        except StoreError as exc:
            log.warning("quota: settling failed (retried with the heartbeat): %s", exc.detail)
            self._unsettled.append((admission, usage))
        self._wake_all()

    def note_retry(self, admission: FleetAdmission) -> None:
        """A resend counts as one more request on the shared account."""
        if not admission.settled:
            self._observe_later(admission.model, None)

    def observe(self, snapshot: RateLimitSnapshot) -> None:
        """Take in one response's headers / 429 into the shared mirror (in order, soon:
        the completions client calls this synchronously)."""
        if snapshot.remaining_requests is not None or snapshot.remaining_tokens is not None:
            self._account(snapshot.model).reported = snapshot
        self._observe_later(snapshot.model, snapshot)

    def limits_for(self, model: str) -> tuple[ModelLimits, ModelLimits]:
        account = self._account(model)
        return account.limits, account.user_limits

    def predict_wait(self, model: str, estimated_tokens: int) -> tuple[float, str]:
        """As ``QuotaManager.predict_wait``, on the last shared state this process saw of
        ``model`` (no database round trip: the engine asks before every admit)."""
        return predicted_wait(
            self._account(model), estimated_tokens, self._clock.time(), self._config
        )

    def max_wait_s(self) -> float:
        return self._config.max_queue_wait_s

    # ----- reporting -----

    async def report(self, user: UserRef, *, admin: bool, current_model: str | None = None) -> str:
        """The ``/usage`` text, from the shared rows."""
        sid = user.storage_id()
        is_admin = self._config.is_admin(user.platform.value, user.user_id)
        default = current_model or self._config.default_model
        async with self._ledger.transaction() as tx:
            now = tx.now
            states, in_flight = await tx.user_states(sid)
            if default and default not in states:
                states[default] = None
            usage = []
            for model, state in sorted(states.items()):
                account = await self._load(tx, model, lock=False)
                counters = self._user_counters(state)
                limits = None if is_admin else account.user_limits
                usage.append(ModelUsage(model, user_dimensions(counters, limits, now)))
            statuses = None
            if admin:
                statuses = []
                for model in await tx.models():
                    account = await self._load(tx, model, lock=False)
                    queued, _, _ = await tx.queue(model)
                    dim = self._config.requests_header_dimension
                    statuses.append(account_status(account, queued, dim, now))
        snapshot = UserUsage(
            user, is_admin, in_flight, self._config.user_max_in_flight, tuple(usage)
        )
        return format_usage(snapshot, statuses)

    # ----- admission steps -----

    async def _user_turn(
        self,
        sid: str,
        model: str,
        tokens: int,
        mine: int,
        admin: bool,
        line: WaitQueue,
        ticket: Waiter,
        wake: asyncio.Event,
        on_wait: OnWait | None,
    ) -> tuple[int | None, float | None]:
        """Wait first in the user's line, then for the user's limits; then count the
        request (one transaction). Return its id and, when it must queue for the
        account, the estimated wait there (None: reserved at once)."""
        told: tuple[WaitReason, float] | None = None
        while True:
            wake.clear()
            if line.head() is not ticket:
                step = _Step(reason=WaitReason.YOUR_TURN)
            else:
                step = await self._enter(sid, model, tokens, mine, admin)
            if step.refusal is not None:
                raise step.refusal
            if step.request_id is not None:
                if step.admitted:
                    return step.request_id, None
                return step.request_id, step.wait
            now = self._clock.now()
            if on_wait is not None and (
                told is None
                or told[0] is not step.reason
                or now + step.wait > told[1] + REANNOUNCE_S
            ):
                told = step.reason, now + step.wait
                await on_wait(step.wait if step.wait < math.inf else 0.0, step.reason)
            await self._sleep_or_wake(wake, step.wait)

    async def _enter(self, sid: str, model: str, tokens: int, mine: int, admin: bool) -> _Step:
        """One transaction: check the user's limits and requests in flight, count the
        request, and reserve at once if nobody waits and the account has room; else
        queue it (or refuse it at the door, rolling the count back)."""
        async with self._ledger.transaction() as tx:
            now = tx.now
            if not admin:
                # Waiting for one of the user's own requests is the common case while
                # the fleet is busy: tell it without queueing for the model's row lock.
                in_flight, running = await tx.user_requests(sid)
                if self._turn_taken(in_flight, running):
                    return _Step(reason=WaitReason.YOUR_TURN)
            account = await self._load(tx, model)
            refusal = too_large(account, tokens, self._config)
            if refusal is not None:
                return _Step(refusal=refusal)
            state, in_flight, running = await tx.lock_user(sid, model)
            counters = self._user_counters(state)
            if not admin:
                step = self._user_block(sid, counters, account, mine, in_flight, running, now)
                if step is not None:
                    if step.refusal is not None:
                        await tx.save_user(sid, model, counters.to_state())  # the notice
                    return step
            minute, day = counters.add(mine, now)
            await tx.save_user(sid, model, counters.to_state())
            queued, amount, _ = await tx.queue(model)
            request_id = await tx.insert_request(model, sid, tokens, mine, minute, day)
            if not queued and account.need(tokens, now) <= 0:
                account.budget.take(tokens, now, self._config.drain_hold_s)
                await tx.mark_sent(request_id)
                await tx.save_account(model, account.to_state())
                return _Step(request_id, admitted=True)
            wait, dim = account.estimate(tokens, now, (queued, amount))
            # A TPM-bound wait is tried, never refused at the door (as QuotaManager).
            if wait > self._config.max_queue_wait_s and dim != "tpm":
                # Raised inside the transaction: the user's count is rolled back with it.
                raise QuotaExceeded(
                    busy_text(model, wait, dim),
                    scope="account",
                    retry_in_s=wait,
                    detail=f"{dim} wait {wait:.1f}s",
                )
            return _Step(request_id, wait=wait)

    def _turn_taken(self, in_flight: int, running: int) -> bool:
        """The user has all their requests in flight, or one already waits for the
        account (one per user keeps the fleet's queue one round of the waiting users)."""
        return in_flight >= self._config.user_max_in_flight or in_flight > running

    def _user_block(
        self,
        sid: str,
        counters: UserCounters,
        account: ModelAccount,
        tokens: int,
        in_flight: int,
        running: int,
        now: float,
    ) -> _Step | None:
        """What keeps the user back (as ``QuotaManager._user_block``), fleet-wide; a
        window resetting later than ``max_queue_wait_s`` as a refusal."""
        if self._turn_taken(in_flight, running):
            return _Step(reason=WaitReason.YOUR_TURN)
        blocked = counters.blocking(account.user_limits, tokens, now)
        if blocked is None:
            return None
        dim, wait = blocked
        if wait <= self._config.max_queue_wait_s:
            return _Step(reason=WaitReason.YOUR_LIMIT, wait=wait)
        return _Step(refusal=user_refusal(sid, counters, account, dim, tokens, wait, now))

    async def _account_turn(
        self,
        request_id: int,
        model: str,
        tokens: int,
        deadline: float,
        wake: asyncio.Event,
        on_wait: OnWait | None,
    ) -> None:
        """Wait in the fleet's queue for ``model`` until this request is the head and the
        account has room, then reserve; past ``deadline`` (local monotonic time) give up."""
        start, eta = self._clock.now(), math.inf
        while True:
            wake.clear()
            step = await self._try_reserve(request_id, model, tokens)
            if step.admitted:
                return
            now = self._clock.now()
            left = deadline - now
            if step.wait < math.inf:  # the head: its wait is known
                if left <= 0 or step.soonest > left:
                    raise queue_timeout(model, now - start, max(step.soonest, step.wait))
                if on_wait is not None and eta < math.inf and now + step.wait > eta + REANNOUNCE_S:
                    await on_wait(step.wait, WaitReason.CAPACITY)
                eta = now + step.wait
                await self._sleep_or_wake(wake, min(step.wait + self._config.spare_s, left))
            elif left <= 0:
                raise queue_timeout(model, now - start, self._config.max_queue_wait_s)
            else:
                await self._sleep_or_wake(wake, left)

    async def _try_reserve(self, request_id: int, model: str, tokens: int) -> _Step:
        async with self._ledger.transaction() as tx:
            now = tx.now
            account = await self._load(tx, model)
            _, _, head = await tx.queue(model)
            if head != request_id:
                if not await tx.request_exists(request_id):
                    raise queue_timeout(model, 0.0, self._config.max_queue_wait_s)
                return _Step(request_id)
            need = account.need(tokens, now)
            if need > 0:
                return _Step(request_id, wait=need, soonest=account.need(tokens, now, 0.0))
            account.budget.take(tokens, now, self._config.drain_hold_s)
            await tx.mark_sent(request_id)
            await tx.save_account(model, account.to_state())
            # The next head may look now, and so may this user's next message.
            await tx.notify(model)
            return _Step(request_id, admitted=True)

    # ----- settling, releasing, reaping -----

    async def _settle(self, admission: FleetAdmission, usage: Usage | None) -> None:
        async with self._ledger.transaction() as tx:
            now = tx.now
            account = await self._load(tx, admission.model)
            row = await tx.delete_request(admission.request_id)
            if row is None:
                log.info("quota: request %d was reaped before it settled", admission.request_id)
                return
            if row.sent:
                account.commit(row.tokens, usage, now)
                if usage is not None:
                    account.note_usage(row.tokens, usage.total_tokens)
                await tx.save_account(row.model, account.to_state())
            state, _, _ = await tx.lock_user(row.user_key, row.model)
            counters = self._user_counters(state)
            used = None if usage is None else usage.total_tokens
            counters.settle(row.user_tokens, used, row.minute_start, row.day_start)
            await tx.save_user(row.user_key, row.model, counters.to_state())
            await tx.notify(row.model)

    async def _release(self, request_id: int, model: str) -> None:
        """Undo a request that never ran (refused, timed out or cancelled while queued)."""
        try:
            async with self._ledger.transaction() as tx:
                await self._load(tx, model)  # lock order: account row, then user
                row = await tx.delete_request(request_id)
                if row is not None:
                    await self._undo(tx, [row])
                    await tx.notify(model)
        except StoreError as exc:
            # Left in place it would hold the user's turn and perhaps the fleet's queue.
            log.warning("quota: could not release request %d (retried): %s", request_id, exc.detail)
            self._unreleased.append((request_id, model))
        self._wake_all()

    async def _undo(self, tx: Tx, rows: list[Any]) -> None:
        """Take requests that never ran back from their users' windows."""
        for row in rows:
            state, _, _ = await tx.lock_user(row.user_key, row.model)
            counters = self._user_counters(state)
            counters.release(row.user_tokens, row.minute_start, row.day_start)
            await tx.save_user(row.user_key, row.model, counters.to_state())

    async def _reap(self, process_id: str, *, expired_only: bool = True) -> None:
        """End a process's requests: sent ones count as used in full (they may have
        reached the server), queued ones are taken back from their users."""
        async with self._ledger.transaction() as tx:
            if expired_only and not await tx.claim_expired(process_id):
                return  # renewed meanwhile, or another process reaped it first
            rows = await tx.requests_of(process_id)
            for model in sorted({row.model for row in rows}):
                account = await self._load(tx, model)
                for row in rows:
                    if row.model == model and row.sent:
                        account.commit(row.tokens, None, tx.now)
                await tx.save_account(model, account.to_state())
            await self._undo(tx, [row for row in rows if not row.sent])
            await tx.forget_process(process_id)
            for model in sorted({row.model for row in rows}):
                await tx.notify(model)
        if expired_only:
            sent = sum(row.sent for row in rows)
            log.warning(
                "quota: process %s stopped renewing its lease; released its %d reservations "
                "and %d queued requests",
                process_id,
                sent,
                len(rows) - sent,
            )

    # ----- observations (headers, 429s, retries) -----

    def _observe_later(self, model: str, snapshot: RateLimitSnapshot | None) -> None:
        self._observations.append((model, snapshot))
        if self._observer is None or self._observer.done():
            self._observer = asyncio.create_task(self._apply_observations())

    async def _apply_observations(self) -> None:
        """Apply queued observations in arrival order, one transaction each."""
        while self._observations:
            model, snapshot = self._observations.pop(0)
            try:
                async with self._ledger.transaction() as tx:
                    now = tx.now
                    account = await self._load(tx, model)
                    if snapshot is None:
                        account.budget.take_request(now)
                    else:
                        dim = self._config.requests_header_dimension
                        if account.observe(snapshot, dim, now):
                            account.user_limits = self._config.user_limits(account.limits)
                        retry = snapshot.retry_after_s
                        if retry is not None and retry > 0:
                            account.paused_until = max(account.paused_until, now + retry)
                            log.warning("%s: 429, pausing the fleet's queue %.1f s", model, retry)
                    await tx.save_account(model, account.to_state())
                    await tx.notify(model)
            except StoreError as exc:
                log.warning("quota: could not record the API's rate-limit report: %s", exc.detail)

    # ----- state and waking -----

    def _account(self, model: str) -> ModelAccount:
        """This process's copy of ``model``'s account: the last shared state it saw."""
        account = self._accounts.get(model)
        if account is None:
            account = self._accounts[model] = self._new_account(model)
        return account

    def _new_account(self, model: str) -> ModelAccount:
        return ModelAccount.for_model(model, self._table, self._config)

    async def _load(self, tx: Tx, model: str, *, lock: bool = True) -> ModelAccount:
        """``model``'s shared state into this process's ``ModelAccount``, its row locked
        for the transaction unless ``lock`` is False (a model nobody used yet gets its
        row from the limit table)."""
        account = self._account(model)
        state = await tx.account_state(model, lock=lock)
        if state is None and lock:
            # Another process may be making it too: the insert waits for theirs.
            await tx.add_account(model, self._new_account(model).to_state())
            state = await tx.account_state(model, lock=lock)
        if state is not None:
            account.load_state(state)
            account.user_limits = self._config.user_limits(account.limits)
        return account

    def _user_counters(self, state: dict[str, Any] | None) -> UserCounters:
        counters = UserCounters(minute_s=self._config.minute_s, day_s=self._config.day_s)
        if state is not None:
            counters.load_state(state)
        return counters

    def _heard(self, _model: str) -> None:
        self._wake_all()

    def _wake_all(self) -> None:
        for event in self._events:
            event.set()

    async def _sleep_or_wake(self, wake: asyncio.Event, seconds: float) -> None:
        """Until ``wake`` is set or ``seconds`` pass, capped by the poll interval."""
        # Polling: jittered, so that processes fall out of step instead of all asking
        # the database at once.
        poll = self._poll_s * random.uniform(0.5, 1.5)
        timeout = min(seconds, poll if self.wake == "poll" else _SAFETY_POLL_S)
        if not wake.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), max(0.0, timeout))

    async def _beat(self) -> None:
        """Renew the lease, reconnect the listener, retry failed settles, reap the dead."""
        while True:
            await asyncio.sleep(self._ledger.lease_s / 3)
            try:
                await self._ledger.renew()
                if self.wake == "notify":
                    await self._ledger.relisten()
                await self._retry_unsettled()
                for process_id in await self._ledger.expired():
                    if process_id != self.process_id:
                        await self._reap(process_id)
            except StoreError as exc:
                log.warning("quota: heartbeat failed: %s", exc.detail)

    async def _retry_unsettled(self) -> None:
        """Settles and releases that failed on the database, once more."""
        unreleased, self._unreleased = self._unreleased, []
        for request_id, model in unreleased:
            await self._release(request_id, model)  # re-queues itself on failure
        pending, self._unsettled = self._unsettled, []
        for number, (admission, usage) in enumerate(pending):
            try:
                await self._settle(admission, usage)
            except StoreError:
                self._unsettled.extend(pending[number:])
                raise
