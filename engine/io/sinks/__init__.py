"""Destinations: where converted records go (a directory outbox, or a REST API)."""
