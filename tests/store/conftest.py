"""Fixtures of the storage tests: a migrated database per test, copied from a template that is
migrated once per session (a copy takes a fraction of a second, a migration run longer)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from config.urls import database_named
from store.migrate import migrate


@pytest.fixture(scope="session")
def store_template(pg_server_url: str) -> Iterator[str]:
    name = f"cw_store_tpl_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    migrate(database_named(pg_server_url, name))
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        # CREATE DATABASE ... TEMPLATE fails while anyone is connected to the template, and
        # TimescaleDB's job scheduler connects to every database with the extension unless it
        # is a template: mark it one, refuse connections, and end the scheduler's.
        conn.execute(f'ALTER DATABASE "{name}" IS_TEMPLATE true ALLOW_CONNECTIONS false')
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
    yield name
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" IS_TEMPLATE false')
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def store_url(pg_server_url: str, store_template: str) -> Iterator[str]:
    """A fully migrated database of this test alone."""
    name = f"cw_store_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{store_template}"')
    yield database_named(pg_server_url, name)
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
