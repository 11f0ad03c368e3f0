"""Fresh databases on the test PostgreSQL (``ACESTEPS_TEST_POSTGRES_URL``, written to
``.cache/run/stack.env`` by ``scripts/stack up``)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import psycopg
import pytest

__all__ = ["URL_VAR", "fresh_database"]

URL_VAR = "ACESTEPS_TEST_POSTGRES_URL"


@contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of a new database, dropped afterwards; fails the test when there is no server."""
    admin = os.environ.get(URL_VAR)
    if not admin:
        pytest.fail(
            f"{URL_VAR} is not set: run `scripts/stack up` and `source .cache/run/stack.env`",
            pytrace=False,
        )
    name = f"acesteps_test_{uuid.uuid4().hex[:16]}"
    try:
        conn = psycopg.connect(admin, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL at {URL_VAR}={admin} is unreachable ({exc}): run `scripts/stack up`",
            pytrace=False,
        )
    with conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield urlsplit(admin)._replace(path=f"/{name}").geturl()
        finally:  # FORCE: the backends of closed stores may still be on their way out
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
