import os

import pytest

from helpers import FROZEN_NOW, MAPPING, pg_admin_url


@pytest.fixture
def frozen_clock(monkeypatch):
    monkeypatch.setenv("MAPPER_NOW", FROZEN_NOW)
    return FROZEN_NOW


@pytest.fixture
def mapping_text():
    return MAPPING.read_text(encoding="utf-8")


@pytest.fixture(autouse=True)
def _no_ambient_credentials(monkeypatch, tmp_path):
    # Tests must not depend on a developer's real shop settings.
    for name in ("CCVSHOP_URL", "CCVSHOP_PUBLIC_KEY", "CCVSHOP_SECRET_KEY", "MAPPER_OUTBOX", "MAPPER_STATE",
                 "MAPPER_PLAN", "MAPPER_NOW"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MAPPER_DEBTOR_KEY", "test-register-key-0123456789")
    monkeypatch.setenv("MAPPER_STATE", str(tmp_path / "default-state.sqlite"))
    monkeypatch.setenv("MAPPER_REPORTS", str(tmp_path / "reports"))


# --------------------------------------------------------------------------- PostgreSQL
# Tests that need PostgreSQL use the real server (127.0.0.1:5432 on this project's machines;
# MAPPER_TEST_POSTGRES names another): one fresh database per test session, dropped at its
# end, and one fresh schema per test inside it.

@pytest.fixture(scope="session")
def pg_database():
    """The libpq URL of a database of this test session's own."""
    import secrets
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    name = f"mapper_test_{os.getpid()}_{secrets.token_hex(3)}"
    admin = pg_admin_url()
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is needed for this test and is not reachable at "
                    f"{urlsplit(admin).hostname}: {exc}; start it (see .ci/run)")
    parts = urlsplit(admin)
    yield urlunsplit((parts.scheme, parts.netloc, "/" + name, "", ""))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_database):
    """A URL whose connections see a fresh, empty schema of this test's own."""
    import secrets

    import psycopg

    schema = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return f"{pg_database}?options=-csearch_path%3D{schema}"


def pytest_collection_modifyitems(config, items):
    """A test marked ``sqlite_only`` (it looks at SQLite's file itself) runs with the SQLite
    back-end only: its PostgreSQL variant is deselected, not skipped."""
    keep = [i for i in items if not (i.get_closest_marker("sqlite_only")
                                     and getattr(i, "callspec", None)
                                     and i.callspec.params.get("db") == "postgresql")]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep


@pytest.fixture
def pg_fresh_database(pg_database):
    """A URL of an empty database of this test's own (hosted mode: its tables and the job
    queue's, which a schema of its own would not keep apart)."""
    import secrets
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    name = f"{pg_database.rsplit('/', 1)[1]}_{secrets.token_hex(3)}"
    with psycopg.connect(pg_admin_url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(pg_database)
    yield urlunsplit((parts.scheme, parts.netloc, "/" + name, "", ""))
    with psycopg.connect(pg_admin_url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
