"""A throwaway PostgreSQL server for the benchmarks: the test suite's own cluster.

`tests/conftest.py` builds one with Debian's binaries (`/usr/lib/postgresql/*/bin`, run as
the `postgres` user under root; fsync off) or uses `IMAGINE_TEST_POSTGRES_URL`. Its fixture
is a plain generator underneath, so the benchmarks run exactly that code; `fresh_database`
gives each run an empty database, dropped afterwards.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator

import pytest

from tests.conftest import fresh_database, postgres_server_url

__all__ = ["PostgresUnavailable", "fresh_database", "postgres_server"]


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries here and no `IMAGINE_TEST_POSTGRES_URL`."""


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """The URL of a PostgreSQL server (its maintenance database), stopped afterwards."""
    server = contextlib.contextmanager(inspect.unwrap(postgres_server_url))
    try:
        manager = server()
        url = manager.__enter__()
    except pytest.skip.Exception as skipped:
        raise PostgresUnavailable(str(skipped)) from None
    try:
        yield url
    finally:
        manager.__exit__(None, None, None)
