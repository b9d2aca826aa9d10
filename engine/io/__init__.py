"""Input and delivery: HTTP (auth, paging, rate limit), the sources orders come from, and the
sinks they go to (the outbox directory, the Asperion API)."""
