"""Operations: the runner that drives a run end to end, the state it keeps (SQLite or
PostgreSQL), webhook hints, and the dry-run preview."""
