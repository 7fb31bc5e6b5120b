"""The shared quota's PostgreSQL tables: the only DDL of the fleet quota.

Kept in one constant so it can be folded into the store's versioned migrations; until
then ``FleetLedger.open`` applies it with ``CREATE … IF NOT EXISTS`` under an advisory
lock (several processes starting at once must not race on the catalog).

* ``quota_fleet_process`` — one row per running process and its lease; a process whose
  lease has run out is reaped by any other (its requests are released).
* ``quota_fleet_account`` — one row per model: the account mirror's state
  (``ModelAccount.to_state``: bucket levels with the time they were read at, pending
  reservations, headroom, limits learnt from headers, a 429 pause). Every change is made
  under ``SELECT … FOR UPDATE`` of this row.
* ``quota_fleet_user`` — one row per (user, model): the user's fixed windows
  (``UserCounters.to_state``).
* ``quota_fleet_request`` — one row per admitted request not yet settled: ``sent`` False
  while it waits for the account (the fleet's queue, in ``id`` order), True once it
  holds its reservation. A user's requests in flight are that user's rows.

Times inside the state are epoch seconds of the database's clock
(``clock_timestamp()``), so processes with skewed clocks agree.
"""

from __future__ import annotations

__all__ = ["FLEET_QUOTA_DDL", "SCHEMA_LOCK"]

# pg_advisory_lock key for applying the DDL ("groqbot quota" as a 64-bit number).
SCHEMA_LOCK = 0x67726F71_71756F74

FLEET_QUOTA_DDL = """
CREATE TABLE IF NOT EXISTS quota_fleet_process (
    id text PRIMARY KEY,
    lease_until timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS quota_fleet_account (
    model text PRIMARY KEY,
    state jsonb NOT NULL
);
CREATE TABLE IF NOT EXISTS quota_fleet_user (
    user_key text NOT NULL,
    model text NOT NULL,
    state jsonb NOT NULL,
    PRIMARY KEY (user_key, model)
);
CREATE TABLE IF NOT EXISTS quota_fleet_request (
    id bigserial PRIMARY KEY,
    process_id text NOT NULL,
    model text NOT NULL,
    user_key text NOT NULL,
    tokens integer NOT NULL,
    user_tokens integer NOT NULL,
    minute_start double precision NOT NULL,
    day_start double precision NOT NULL,
    sent boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS quota_fleet_request_user ON quota_fleet_request (user_key);
CREATE INDEX IF NOT EXISTS quota_fleet_request_process ON quota_fleet_request (process_id);
CREATE INDEX IF NOT EXISTS quota_fleet_request_waiting
    ON quota_fleet_request (model, id) WHERE NOT sent;
"""
