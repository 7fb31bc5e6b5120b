"""The test PostgreSQL cluster itself: a real server that answers SQL."""

from __future__ import annotations

import subprocess

from tests.pg_cluster import PgCluster


def test_a_fresh_database_answers_sql(pg_cluster: PgCluster, pg_dsn: str) -> None:
    out = subprocess.run(
        ["psql", "-X", "-At", "-d", pg_dsn, "-c", "SELECT 40 + 2"],
        capture_output=True,
        check=True,
        text=True,
    )
    assert out.stdout.strip() == "42"
    assert pg_dsn != pg_cluster.admin_dsn
