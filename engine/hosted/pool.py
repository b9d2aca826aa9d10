"""State stores on a connection pool: one per process of `mapper worker` or `mapper serve`.

A job or a web request borrows a connection (psycopg_pool, checked on borrow: a database
restart leaves dead ones) and gives it back, instead of connecting anew each time.
"""

from __future__ import annotations

import threading

POOL_SIZE = 8                                    # state connections a process keeps at most


class StorePool:
    def __init__(self, database: str, application_name: str, max_size: int = POOL_SIZE):
        self.database, self.application_name, self.max_size = database, application_name, max_size
        self._pool = None
        self._lock = threading.Lock()

    def store(self):
        """A writable PostgreSQL state store on a pooled connection (use it in a ``with``)."""
        from psycopg_pool import ConnectionPool
        from engine.ops.state.postgres import PostgresStateStore
        with self._lock:
            if self._pool is None:
                self._pool = ConnectionPool(self.database, min_size=1, max_size=self.max_size,
                                            kwargs={"autocommit": True, "application_name": self.application_name},
                                            check=ConnectionPool.check_connection, open=True,
                                            name=self.application_name)
        return PostgresStateStore(self.database, pool=self._pool)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None
