"""Hosted mode: one provider serves many shops from one PostgreSQL database (spec/hosted.md).

The engine, mapping and runner are those of `mapper run`; this package holds what is around
them: sealed secrets (:mod:`.crypto`), the shops registry (:mod:`.shops`) and the workers that
run each shop's day on the job queue (:mod:`.worker`).
"""
