"""mapper: the command line. Imports stay inside the commands so that --help is fast."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path
from typing import Optional

import functools

import typer


class Commands(typer.Typer):
    """A Typer whose every command reports an engine error in one place (:func:`_fail`): its
    message on stderr and its exit code (engine/errors.py: 2 for configuration, 1 otherwise,
    4 busy), never a traceback. Every error the engine raises on purpose is a MapperError."""

    def command(self, *args, **kwargs):
        register = super().command(*args, **kwargs)

        def decorator(fn):
            @functools.wraps(fn)
            def handled(*a, **kw):
                from engine.errors import MapperError
                try:
                    return fn(*a, **kw)
                except MapperError as exc:
                    _fail(exc)
            register(handled)
            return fn
        return decorator


# rich_markup_mode=None: click's plain help and usage errors; rendering them with rich cost
# ~80 ms of imports on every `--help` (bench/: target 0.3 s).
app = Commands(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  context_settings={"max_content_width": 100},
                  help="Turn shop orders into accounting import files, as a mapping declares.")

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG, EXIT_QUARANTINE, EXIT_BUSY = 0, 1, 2, 3, 4

MappingArg = typer.Argument(..., metavar="MAPPING", help="The mapping file, e.g. mappings/ccvshop_asperion.yaml")


def _fail(exc: Exception) -> None:
    from engine.errors import MapperError
    code = exc.exit_code if isinstance(exc, MapperError) else EXIT_FAILURE
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code)


def _day(value: Optional[str], option: str) -> Optional[date]:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        typer.echo(f"error: {option} {value!r} is not a date; write YYYY-MM-DD", err=True)
        raise typer.Exit(EXIT_CONFIG) from None


@app.command()
def validate(mapping: Path = MappingArg) -> None:
    """Check a mapping: schema, expressions, templates, XSD. Exit 2 on any error."""
    from engine.config.mapping import load_mapping
    from engine.output.xsd import Validator
    m = load_mapping(mapping)
    Validator(m.xsd_path)
    typer.echo(f"{mapping}: ok (mapping '{m.name}')")


@app.command("dry-run")
def dry_run(
    mapping: Path = MappingArg,
    fixtures: Optional[Path] = typer.Option(None, metavar="DIR", help="Read orders from this directory (one JSON file per order) instead of the shop."),
    sandbox: bool = typer.Option(False, "--sandbox", help="Run against the bundled demo shop on a loopback simulator (no credentials)."),
    since: Optional[str] = typer.Option(None, metavar="YYYY-MM-DD", help="Only orders created on or after this date (YYYY-MM-DD, UTC)."),
    until: Optional[str] = typer.Option(None, metavar="YYYY-MM-DD", help="Only orders created on or before this date (YYYY-MM-DD, UTC)."),
    out: Optional[str] = typer.Option(None, metavar="FILE", help="Write the XML here; '-' for stdout. Without it the XML is built and validated, not written."),
    state: Optional[str] = typer.Option(None, "--state", metavar="FILE", help="State database to read (never written): delivered orders are left out, known debtors keep their numbers."),
) -> None:
    """Preview: run every stage except delivery. Writes nothing but --out."""
    import os
    from engine.convert.debtors import build_matcher
    from engine.clock import now
    from engine.io.files import atomic_write
    from engine.ops.intake import poll_window
    from engine.ops.preview_run import dry_run as run_preview
    from engine.ops.runner import resolve_plan

    since_d, until_d = _day(since, "--since"), _day(until, "--until")
    report = sys.stderr if out == "-" else sys.stdout
    note = None
    with _mapping_and_source(mapping, fixtures, sandbox) as (m, source, default_since):
        window = poll_window(m, since_d or default_since, until_d, None if fixtures is not None else now().date())
        with _open_store(state, readonly=True) as store, _destination(m) as dest:  # read, never written
            bodies = None
            if dest is not None:
                from engine.io.sinks.api import ApiDebtorMatcher, BodyPreview
                bodies = BodyPreview(dest, dest.load_references())
                matcher = ApiDebtorMatcher(dest, readonly=True)
            else:
                matcher, note = build_matcher(m, store, readonly=True, environ=dict(os.environ))
            kw = {"store": store, "window": window, "since": since_d, "until": until_d, "matcher": matcher,
                  "bodies": bodies, "plan": resolve_plan(m, os.environ), "destination": dest}
            if out == "-":
                summary = run_preview(m, source, sys.stdout.buffer, **kw)
                sys.stdout.buffer.flush()
            elif out:
                with atomic_write(Path(out)) as f:
                    summary = run_preview(m, source, f, **kw)
            else:
                summary = run_preview(m, source, None, **kw)
    if summary.already_delivered:
        print(f"{summary.already_delivered} orders already delivered by earlier runs are left out", file=report)
    if summary.dropped:
        print(f"{summary.dropped} dropped orders are left out (never delivered)", file=report)
    for message in summary.messages:
        print(message, file=report)
    if note:
        print(f"note: {note}", file=report)
    _report(m, summary, out, report)


def _destination(m):
    """The mapping's API destination (None for a file mapping), closed afterwards."""
    import contextlib

    @contextlib.contextmanager
    def cm():
        if not m.has_api:
            yield None
            return
        from engine.io.sinks.api import ApiDestination
        dest = ApiDestination(m)
        try:
            yield dest
        finally:
            dest.close()

    return cm()


def _mapping_and_source(mapping: Path, fixtures: Optional[Path], sandbox: bool):
    """Load the mapping and open its source: fixtures, the sandbox simulator, or the shop."""
    import contextlib
    from engine.config.mapping import load_mapping
    from engine.io.sources.open import open_source, sandbox_environment

    @contextlib.contextmanager
    def cm():
        if sandbox and fixtures is not None:
            typer.echo("error: --sandbox and --fixtures exclude each other", err=True)
            raise typer.Exit(EXIT_CONFIG)
        if not sandbox:
            m = load_mapping(mapping)
            yield m, open_source(m, fixtures), None
            return
        first = load_mapping(mapping)
        with sandbox_environment(first.sandbox, str(mapping)) as env:
            m = load_mapping(mapping, environ=env)
            spec_since = m.sandbox.since if m.sandbox else None
            source = open_source(m)
            try:
                yield m, source, date.fromisoformat(spec_since) if spec_since else None
            finally:
                source.close()

    return cm()


StateOpt = typer.Option(None, "--state", metavar="FILE", help="State database (default: $MAPPER_STATE or ~/.local/share/mapper/state.sqlite).")


ShopOpt = typer.Option(None, "--shop", metavar="SHOP", help="Hosted mode: this shop's state (MAPPER_DATABASE).")


def _open_store(state: Optional[str], readonly: bool = False, shop: Optional[str] = None):
    """The state store; with ``shop``, that hosted shop's part of MAPPER_DATABASE."""
    from engine.ops.state import open_state
    if shop is None:
        return open_state(state or None, readonly=readonly)
    from engine.hosted.runs import ShopState
    from engine.hosted.shops import ShopRegistry
    from engine.hosted.worker import HostedSettings
    if state:
        typer.echo("error: --shop and --state exclude each other (a shop's state is in MAPPER_DATABASE)", err=True)
        raise typer.Exit(EXIT_CONFIG)
    store = open_state(HostedSettings.from_env().database, readonly=readonly)
    try:
        ShopRegistry(store).get(shop)
    except BaseException:
        store.close()
        raise
    return ShopState(store, shop, owns=True)


@app.command()
def run(
    mapping: Path = MappingArg,
    fixtures: Optional[Path] = typer.Option(None, metavar="DIR", help="Read orders from this directory instead of the shop."),
    sandbox: bool = typer.Option(False, "--sandbox", help="Run against the bundled demo shop on a loopback simulator."),
    since: Optional[str] = typer.Option(None, metavar="YYYY-MM-DD", help="Back-fill: orders created on or after this date (YYYY-MM-DD)."),
    until: Optional[str] = typer.Option(None, metavar="YYYY-MM-DD", help="Back-fill: orders created on or before this date (YYYY-MM-DD)."),
    outbox: Optional[Path] = typer.Option(None, metavar="DIR", help="Where the files go (default: $MAPPER_OUTBOX, else the mapping's sink)."),
    state: Optional[str] = StateOpt,
    wait: float = typer.Option(0.0, metavar="SECONDS", help="Seconds to wait for another run of this mapping to finish (then exit 4)."),
    report: Optional[Path] = typer.Option(None, metavar="FILE", help="Write the JSON run report here (default: the mapping's sink.report)."),
) -> None:
    """Deliver paid orders to the outbox, each exactly once. Exit 3 when some were quarantined."""
    import os
    from engine.convert.debtors import build_matcher
    from engine.io.outbox import Outbox
    from engine.ops.runner import Runner, resolve_outbox, resolve_plan
    from engine.ops.state import LockBusy

    since_d, until_d = _day(since, "--since"), _day(until, "--until")
    result = None
    try:
        with _mapping_and_source(mapping, fixtures, sandbox) as (m, source, default_since):
            store = _open_store(state)
            with store:
                switch = store.enabled_state(m.name)
                if not switch.enabled:
                    why = f": {switch.reason}" if switch.reason else ""
                    typer.echo(f"{m.name} is disabled{why} (since {switch.changed_at:%Y-%m-%d %H:%M} UTC); "
                               f"nothing done. `mapper enable {mapping}` resumes it; its state is kept.")
                    raise typer.Exit(EXIT_OK)
                box: Path | str = resolve_outbox(m, outbox, os.environ)
                plan = resolve_plan(m, os.environ)
                progress = _progress() if sys.stderr.isatty() else None
                with _destination(m) as dest:
                    if dest is not None:
                        from engine.io.sinks.api import ApiDebtorMatcher
                        matcher, target = ApiDebtorMatcher(dest, readonly=False), None
                        box = dest.name
                    else:
                        matcher, _ = build_matcher(m, store, readonly=False, environ=dict(os.environ))
                        target = Outbox.for_mapping(m, box, wait_seconds=wait, owner=store.location)
                    with store.run_lock(m.name, wait):
                        runner = Runner(m, source, store, target, plan=plan, since=since_d or default_since,
                                        until=until_d, progress=progress, matcher=matcher, destination=dest)
                        try:
                            result = runner.run()
                        finally:
                            if progress:
                                sys.stderr.write("\n")
                            _write_report(m, runner.result, report, box)
    except LockBusy as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_BUSY) from None
    _run_summary(result, box, api=not isinstance(target, Outbox))
    raise typer.Exit(EXIT_QUARANTINE if result.counts["quarantined"] else EXIT_OK)


def _progress():
    def show(counts) -> None:
        sys.stderr.write(f"\rfetched {counts['fetched']}  delivered {counts['delivered']}  "
                         f"quarantined {counts['quarantined']}  already delivered {counts['already_delivered']}")
        sys.stderr.flush()
    return show


def _write_report(m, result, report: Optional[Path], box) -> None:
    """The run report (engine.ops.report); a report that cannot be written is a warning."""
    from engine.ops.report import write_run_report
    warning = write_run_report(m, result, report, box)
    if warning:
        typer.echo(f"warning: {warning}", err=True)


def _run_summary(result, box, api: bool = False) -> None:
    c = result.counts
    credits = f" and {c['credited']} credit note(s)" if c.get("credited") else ""
    if api:
        typer.echo(f"delivered {c['delivered']} orders{credits} to {box}")
    else:
        typer.echo(f"delivered {c['delivered']} orders{credits} in {c['files']} file(s) to {box}"
                   + (f": {', '.join(result.files)}" if result.files else ""))
    typer.echo(f"fetched {c['fetched']}, already delivered {c['already_delivered']}, not counted {c['excluded']}, "
               f"quarantined {c['quarantined']}, held by plan {c['held_by_plan']}"
               + (f", recovered {c['recovered']} file(s) of an interrupted run" if c["recovered"] else "")
               + (f", redid {c['redone']} interrupted batch(es)" if c["redone"] else ""))
    for q in result.quarantined:
        typer.echo(f"  quarantined: order {q.number} (id {q.shop_id}): {q.reason}")
    for number, flag in result.flags:
        typer.echo(f"  flag: order {number}: {flag}")
    if c.get("dropped_skipped"):
        typer.echo(f"skipped {c['dropped_skipped']} dropped order(s): never delivered "
                   f"(`mapper quarantine retry MAPPING ORDER` takes one back)")
    for message in result.messages:
        typer.echo(message)


def _mapping_name(mapping: Path) -> str:
    from engine.config.mapping import load_mapping
    return load_mapping(mapping).name


@app.command()
def status(mapping: Path = MappingArg, state: Optional[str] = StateOpt, shop: Optional[str] = ShopOpt,
           as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Last runs with counts, open quarantine, plan usage, pending batches."""
    import json
    import os
    from engine.clock import now
    from engine.config.mapping import load_mapping
    from engine.ops.runner import PLAN_YEAR_ZONE, plan_limit, plan_year, resolve_plan
    m = load_mapping(mapping)
    with _open_store(state, readonly=True, shop=shop) as store:
        plan = resolve_plan(m, os.environ, store.shop.plan if shop else None)
        year = plan_year(now())
        switch = store.enabled_state(m.name)
        held = store.held(m.name)
        hints = store.all_hints(m.name)
        credits = store.credits(m.name)
        data = {
            "mapping": m.name,
            "enabled": switch.enabled,
            "disabled": None if switch.enabled else {
                "since": switch.changed_at.isoformat() if switch.changed_at else None, "reason": switch.reason},
            "held_by_plan": {"count": len(held), "since": held[0][1].isoformat() if held else None,
                             "orders": [{"order_id": ref.shop_id, "number": ref.number,
                                         "order_date": ref.order_date.isoformat()} for ref, _ in held]},
            "hints": {"pending": sum(1 for h in hints if h.status == "pending"),
                      "refused": sum(1 for h in hints if h.status == "refused")},
            "credits": {status: [{"credit_id": c.credit_id, "order_id": c.order_id, "amount": str(c.amount),
                                  "reason": c.reason} for c in credits if c.status == status]
                        for status in ("booked", "flagged", "waiting", "settled")},
            "plan": {"name": plan, "limit": plan_limit(plan), "year": year,
                     "delivered": store.delivered_count(m.name, year, PLAN_YEAR_ZONE)},
            "runs": [{"id": r.id, "started": r.started_at.isoformat(), "mode": r.mode,
                      "outcome": r.outcome or ("running" if store.lock_holder(m.name) else "interrupted"),
                      "finished": r.finished_at.isoformat() if r.finished_at else None, "counts": r.counts}
                     for r in store.last_runs(m.name, 10)],
            "quarantine": [_q(q) for q in store.open_quarantine(m.name)],
            "pending_batches": [{"id": b.id, "file": b.file_name, "orders": len(b.orders)}
                                for b in store.pending_batches(m.name)],
        }
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    p = data["plan"]
    off = data["disabled"]
    state_words = "enabled" if data["enabled"] else (
        f"DISABLED since {(off['since'] or '?')[:16]}" + (f" ({off['reason']})" if off["reason"] else ""))
    typer.echo(f"{m.name}: {state_words}; plan {p['name']}: "
               f"{p['delivered']} invoices in {p['year']}" + (f" of {p['limit']}" if p["limit"] else ""))
    h = data["held_by_plan"]
    if h["count"]:
        typer.echo(f"held by the plan: {h['count']} paid order(s) since {h['since'][:10]}, delivered when the "
                   f"limit allows (plan change or a new year)")
    if data["hints"]["pending"] or data["hints"]["refused"]:
        typer.echo(f"webhook hints: {data['hints']['pending']} waiting for the next run, "
                   f"{data['hints']['refused']} refused (`mapper hints list`)")
    cr = data["credits"]
    if cr["booked"] or cr["flagged"] or cr["waiting"]:
        typer.echo(f"credit notes: {len(cr['booked'])} booked, {len(cr['flagged'])} not booked (more than was "
                   f"left to credit), {len(cr['waiting'])} for orders never booked")
        for c in cr["flagged"] + cr["waiting"]:
            typer.echo(f"  {c['credit_id']}: {c['reason']}")
    typer.echo("last runs:" if data["runs"] else "no runs yet")
    for r in data["runs"]:
        c = r["counts"]
        typer.echo(f"  #{r['id']} {r['started'][:19]} {r['mode']:8} {r['outcome'] or 'running':11} "
                   + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in c.items() if v))
    typer.echo(f"open quarantine: {len(data['quarantine'])}")
    for q in data["quarantine"]:
        typer.echo(f"  order {q['number']} (id {q['order_id']}), {q['attempts']} attempt(s): {q['reason']}")
    for b in data["pending_batches"]:
        typer.echo(f"pending batch {b['id']} ({b['orders']} orders, {b['file']}): finished by the next run")


def _q(q) -> dict:
    return {"order_id": q.shop_id, "number": q.number, "reason": q.reason, "attempts": q.attempts,
            "status": q.status, "first_seen": q.first_seen.isoformat(), "last_seen": q.last_seen.isoformat()}


quarantine_app = Commands(help="Orders that could not be converted: list, retry, drop.", no_args_is_help=True,
                             rich_markup_mode=None)
app.add_typer(quarantine_app, name="quarantine")


def _resolve_orders(store, name: str, orders: list[str]) -> list[str]:
    """Order ids from ids or order numbers as the user typed them (open or dropped entries)."""
    entries = store.open_quarantine(name) + store.dropped_entries(name)
    by_number = {q.number: q.shop_id for q in entries}
    return [by_number.get(o, o) for o in orders]


@quarantine_app.command("list")
def quarantine_list(mapping: Path = MappingArg, state: Optional[str] = StateOpt, shop: Optional[str] = ShopOpt,
                    as_json: bool = typer.Option(False, "--json")) -> None:
    """Open quarantine with reasons, attempts, first and last seen."""
    import json
    name = _mapping_name(mapping)
    with _open_store(state, readonly=True, shop=shop) as store:
        entries = [_q(q) for q in store.open_quarantine(name)]
    if as_json:
        typer.echo(json.dumps(entries, indent=2))
        return
    if not entries:
        typer.echo("quarantine is empty")
    for q in entries:
        typer.echo(f"order {q['number']} (id {q['order_id']}): {q['reason']} "
                   f"[{q['attempts']} attempt(s), first {q['first_seen'][:10]}, last {q['last_seen'][:10]}]")


@quarantine_app.command("retry")
def quarantine_retry(mapping: Path = MappingArg, orders: list[str] = typer.Argument(..., metavar="ORDER...", help="Order ids or numbers."),
                     state: Optional[str] = StateOpt, shop: Optional[str] = ShopOpt) -> None:
    """Try these orders again in the next run (also dropped ones)."""
    from engine.clock import now
    name = _mapping_name(mapping)
    with _open_store(state, shop=shop) as store:
        ids = _resolve_orders(store, name, orders)
        was_open = {q.shop_id for q in store.open_quarantine(name)}
        was_dropped = store.dropped(name)
        reopened = store.retry(name, ids)
        for shop_id in ids:
            store.add_hint(name, shop_id, "retry", now())
    for given, shop_id in zip(orders, ids):
        label = f"order {given}" + (f" (id {shop_id})" if given != shop_id else "")
        if shop_id in was_dropped:
            typer.echo(f"{label}: was dropped, now back in quarantine")
        elif shop_id in was_open:
            typer.echo(f"{label}: in quarantine")
        else:
            typer.echo(f"{label}: not in quarantine")
    typer.echo(f"{len(ids)} order(s) will be fetched again by the next run"
               + (f" ({reopened} of them reopened after a drop)" if reopened else ""))


@quarantine_app.command("drop")
def quarantine_drop(mapping: Path = MappingArg, orders: list[str] = typer.Argument(..., metavar="ORDER...", help="Order ids or numbers."),
                    reason: str = typer.Option(..., metavar="TEXT", help="Why (recorded for the audit trail)."),
                    force: bool = typer.Option(False, "--force", help="Also drop orders that are not in quarantine (they are then never delivered)."),
                    state: Optional[str] = StateOpt, shop: Optional[str] = ShopOpt) -> None:
    """Stop trying these quarantined orders; the drop and its reason are recorded."""
    from engine.clock import now
    name = _mapping_name(mapping)
    with _open_store(state, shop=shop) as store:
        ids = _resolve_orders(store, name, orders)
        quarantined = {q.shop_id for q in store.open_quarantine(name)} | store.dropped(name)
        strangers = [given for given, shop_id in zip(orders, ids) if shop_id not in quarantined]
        if strangers and not force:
            typer.echo(f"error: not in quarantine: {', '.join(strangers)}; a dropped order is never "
                       f"delivered. Give --force if that is what you want", err=True)
            raise typer.Exit(EXIT_CONFIG)
        for shop_id in ids:
            store.drop(name, shop_id, reason, now())
    typer.echo(f"dropped {len(ids)} order(s): {reason}"
               + (f" ({len(strangers)} not in quarantine, dropped with --force)" if strangers else ""))


def _switch(mapping: Path, state: Optional[str], enabled: bool, reason: Optional[str]) -> None:
    from engine.clock import now
    name = _mapping_name(mapping)
    with _open_store(state) as store:
        store.set_enabled(name, enabled, now(), reason)
    typer.echo(f"{name} {'enabled' if enabled else 'disabled: runs do nothing until `mapper enable`'}")


@app.command()
def disable(mapping: Path = MappingArg, reason: Optional[str] = typer.Option(None, metavar="TEXT", help="Why (kept in the state, with the time)."), state: Optional[str] = StateOpt) -> None:
    """Stop the connector: runs exit 0 and do nothing; all state is kept."""
    _switch(mapping, state, False, reason)


@app.command()
def enable(mapping: Path = MappingArg, state: Optional[str] = StateOpt) -> None:
    """Resume a disabled connector."""
    _switch(mapping, state, True, None)


@app.command()
def listen(
    mapping: Path = MappingArg,
    host: str = typer.Option("127.0.0.1", metavar="ADDRESS", help="Address to listen on."),
    port: int = typer.Option(8787, metavar="PORT", help="Port to listen on."),
    state: Optional[str] = StateOpt,
) -> None:
    """Receive the shop's webhooks and record the order ids as hints for the next run.

    A hint is only a hint: the next run re-fetches the order through the authenticated API
    and delivers it only if it really is paid. Nothing but the order id and the time is kept.
    """
    import logging
    from engine.clock import now
    from engine.config.mapping import load_mapping
    from engine.ops.webhooks import WebhookListener
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    m = load_mapping(mapping)
    _open_store(state).close()  # fail now, not on the first webhook
    spec = m.webhooks

    import hmac
    import os
    from datetime import timedelta
    from engine.ops.webhooks import HintRefused, token_hash
    per_day, pending = spec.max_per_day, spec.max_pending

    def on_hint(shop_id: str, event: str) -> None:
        with _open_store(state) as store:  # one connection per hint: listener threads share nothing
            if store.hint_count(m.name, now() - timedelta(days=1)) >= per_day:
                raise HintRefused(f"{per_day} hints in 24 hours (intake.webhooks.max_per_day); try later")
            if store.hint_count(m.name) >= pending:
                raise HintRefused(f"{pending} hints wait already (intake.webhooks.max_pending)")
            store.add_hint(m.name, shop_id, event, now())

    def authorize(token: str, event: str) -> bool:
        with _open_store(state, readonly=True) as store:
            found = store.webhook_token(token_hash(token))
        return found is not None and hmac.compare_digest(found.token_hash, token_hash(token)) \
            and found.mapping == m.name and found.event == event

    key_env = spec.signature_key_env
    listener = WebhookListener(host, port, on_hint, events=spec.events, id_field=spec.id_field,
                               max_body=spec.max_body, default_event=spec.default_event, authorize=authorize,
                               signature_key=os.environ.get(key_env) or None if key_env else None,
                               max_connections=spec.max_connections, request_seconds=spec.request_seconds)
    with _open_store(state, readonly=True) as store:
        subscriptions = store.webhook_tokens(m.name)
    if not subscriptions:
        typer.echo(f"warning: no webhook subscriptions yet, every delivery is refused: "
                   f"`mapper hooks add {mapping} orders.updated.ispaid --base-url https://your-host` makes one", err=True)
    typer.echo(f"listening on {listener.url}/<token>/<event> for {len(subscriptions)} subscription(s) "
               f"({', '.join(sorted({t.event for t in subscriptions})) or 'none'}); Ctrl-C stops")
    try:
        listener.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        listener.stop()


hooks_app = Commands(help="Webhook subscriptions: each has a secret address /hooks/<token>/<event>.",
                        no_args_is_help=True, rich_markup_mode=None)
app.add_typer(hooks_app, name="hooks")
hints_app = Commands(help="Webhook hints waiting for the next run, and those refused.", no_args_is_help=True,
                        rich_markup_mode=None)
app.add_typer(hints_app, name="hints")


@hooks_app.command("add")
def hooks_add(mapping: Path = MappingArg,
              event: str = typer.Argument("orders.updated.ispaid", metavar="EVENT", help="The event of this subscription."),
              base_url: str = typer.Option(..., "--base-url", metavar="URL", help="Where the shop reaches `mapper listen`, e.g. https://hooks.example.nl"),
              subscribe: bool = typer.Option(False, "--subscribe", help="Also subscribe it at the shop (POST /webhooks)."),
              state: Optional[str] = StateOpt) -> None:
    """Make a subscription's secret address (shown once; the state keeps only its hash)."""
    import re
    from engine.clock import now
    from engine.ops.webhooks import new_token
    if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,100}", event):
        typer.echo(f"error: {event!r} is not an event name (e.g. orders.updated.ispaid)", err=True)
        raise typer.Exit(EXIT_CONFIG)
    if not re.match(r"https?://[^/\s]+", base_url):
        typer.echo(f"error: --base-url {base_url!r} is not a web address", err=True)
        raise typer.Exit(EXIT_CONFIG)
    m_name = _mapping_name(mapping)
    token, hashed = new_token()
    address = f"{base_url.rstrip('/')}/hooks/{token}/{event}"
    with _open_store(state) as store:
        store.add_webhook_token(m_name, hashed, event, now())
    if subscribe:
        _subscribe_at_shop(mapping, event, address)
    typer.echo(f"subscription {hashed[:12]} for {event}; its address (shown only now, keep it secret):")
    typer.echo(address)


def _subscribe_at_shop(mapping: Path, event: str, address: str) -> None:
    from engine.errors import SourceError
    from engine.io.http.client import HttpClient, HttpError
    from engine.config.mapping import load_mapping
    m = load_mapping(mapping)
    try:
        client = HttpClient(m.source_http())
        answer = client.request("POST", "/api/rest/v1/webhooks",
                                json_body={"event": event, "address": address, "is_active": True})
    except HttpError as exc:
        raise SourceError(f"the shop did not take the subscription: {exc}") from None
    typer.echo(f"subscribed at the shop (webhook {(answer or {}).get('id', '?')}); to check its signatures, "
               f"set the webhook's key in the variable intake.webhooks.signature_key_env names")


@hooks_app.command("list")
def hooks_list(mapping: Path = MappingArg, state: Optional[str] = StateOpt) -> None:
    """The subscriptions: id, event, since when (the addresses themselves are not kept)."""
    name = _mapping_name(mapping)
    with _open_store(state, readonly=True) as store:
        tokens = store.webhook_tokens(name)
    if not tokens:
        typer.echo("no subscriptions: `mapper hooks add MAPPING EVENT --base-url URL`")
    for t in tokens:
        typer.echo(f"{t.token_hash[:12]}  {t.event}  since {t.created_at:%Y-%m-%d %H:%M} UTC")


@hooks_app.command("remove")
def hooks_remove(mapping: Path = MappingArg, subscription: str = typer.Argument(..., metavar="ID", help="As `hooks list` shows it."),
                 state: Optional[str] = StateOpt) -> None:
    """Stop accepting deliveries to one subscription's address."""
    name = _mapping_name(mapping)
    try:
        with _open_store(state) as store:
            removed = store.remove_webhook_tokens(name, subscription)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    if not removed:
        typer.echo(f"error: no subscription {subscription!r}; `mapper hooks list` shows them", err=True)
        raise typer.Exit(EXIT_CONFIG)
    typer.echo(f"removed {removed} subscription(s); deliveries to its address now get 404")


@hints_app.command("list")
def hints_list(mapping: Path = MappingArg, state: Optional[str] = StateOpt, shop: Optional[str] = ShopOpt,
               as_json: bool = typer.Option(False, "--json")) -> None:
    """Hints waiting for the next run, and those refused (with why)."""
    import json
    name = _mapping_name(mapping)
    with _open_store(state, readonly=True, shop=shop) as store:
        rows = [{"order_id": h.shop_id, "event": h.event, "received": h.received_at.isoformat(),
                 "status": h.status, "reason": h.reason} for h in store.all_hints(name)]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no hints")
    for r in rows:
        why = f": {r['reason']}" if r["reason"] else ""
        typer.echo(f"order id {r['order_id']}  {r['event']}  {r['received'][:16]}  {r['status']}{why}")


@hints_app.command("drop")
def hints_drop(mapping: Path = MappingArg, orders: list[str] = typer.Argument(..., metavar="ORDER_ID...", help="Order ids of hints."),
               state: Optional[str] = StateOpt, shop: Optional[str] = ShopOpt) -> None:
    """Forget hints (waiting or refused); the orders are not touched."""
    name = _mapping_name(mapping)
    with _open_store(state, shop=shop) as store:
        removed = store.clear_hints(name, orders)
    typer.echo(f"dropped {removed} hint(s)" + ("" if removed == len(set(orders)) else
                                               f"; {len(set(orders)) - removed} id(s) had none"))


debtors_app = Commands(help="The debtor register: e-mail (as a keyed hash) -> debtor number.", no_args_is_help=True,
                          rich_markup_mode=None)
app.add_typer(debtors_app, name="debtors")


@debtors_app.command("import")
def debtors_import(mapping: Path = MappingArg,
                   file: Path = typer.Argument(..., metavar="CSV", help="An Asperion debtor export (CSV: debtor number, name, e-mail)."),
                   state: Optional[str] = StateOpt, shop: Optional[str] = ShopOpt) -> None:
    """Seed the register, so known customers keep their Asperion debtor number."""
    import os
    from engine.convert.debtors import check_register_key, import_debtors, register_secret
    from engine.config.mapping import load_mapping
    m = load_mapping(mapping)
    spec = m.customer_directory
    if spec.kind != "register":
        typer.echo(f"error: {mapping} does not use a debtor register (customer.directory.kind: register)", err=True)
        raise typer.Exit(EXIT_CONFIG)
    with _open_store(state, shop=shop) as store:
        environ = dict(os.environ)
        if shop:    # a hosted shop's register is keyed with its own (sealed) key
            environ[spec.key_env] = store.secrets.debtor_key
        secret = register_secret(environ, spec.key_env)
        check_register_key(store, m.name, secret, spec.key_env, readonly=False)
        report = import_debtors(file, store, m.name, secret)
    typer.echo(f"{file}: {report.added} added, {report.already} already registered, {len(report.skipped)} skipped")
    for line, why in report.skipped:
        typer.echo(f"  line {line}: {why}")


# --------------------------------------------------------------------------- hosted mode (many shops)

db_app = Commands(help="Hosted mode's database (MAPPER_DATABASE).", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(db_app, name="db")
shops_app = Commands(help="Hosted mode: the shops one provider serves (MAPPER_DATABASE, MAPPER_MASTER_KEY).",
                        no_args_is_help=True, rich_markup_mode=None)
app.add_typer(shops_app, name="shops")
ShopArg = typer.Argument(..., metavar="SHOP", help="The shop's id, as `mapper shops list` shows it.")


def _hosted():
    """Settings, store and registry of hosted mode; configuration errors exit 2."""
    import contextlib

    @contextlib.contextmanager
    def cm():
        from engine.hosted.shops import ShopRegistry
        from engine.hosted.worker import HostedSettings
        from engine.ops.state import open_state
        settings = HostedSettings.from_env()
        with open_state(settings.database) as store:
            yield settings, ShopRegistry(store)
    return cm()


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade the schema: mapper's tables and the job queue's (procrastinate)."""
    from engine.hosted.queue_schema import apply_queue_schema
    with _hosted() as (settings, registry):
        version = registry.store.schema_version()
        applied = apply_queue_schema(registry.store, settings.database)
    typer.echo(f"mapper schema v{version}; job queue: {applied}")


@shops_app.command("add")
def shops_add(name: str = typer.Argument(..., metavar="NAME", help="The shop's name, as the operator knows it."),
              api_root: str = typer.Option(..., "--api-root", metavar="URL", help="The shop's address, https://…"),
              plan: str = typer.Option("plus", metavar="basis|plus", help="basis: 250 invoices a year; plus: unlimited."),
              licence_code: Optional[str] = typer.Option(None, "--licence-code", metavar="CODE"),
              contact: Optional[str] = typer.Option(None, metavar="NAME"),
              email: Optional[str] = typer.Option(None, metavar="ADDRESS"),
              run_on_hint: bool = typer.Option(False, "--run-on-hint", help="A webhook hint runs the shop at once (else the daily run takes it).")) -> None:
    """Register a shop; its API key pair comes from CCVSHOP_PUBLIC_KEY and CCVSHOP_SECRET_KEY."""
    import os
    from engine.clock import now
    with _hosted() as (_, registry):
        shop = registry.add(name, api_root, plan=plan, licence_code=licence_code, contact_name=contact,
                            contact_email=email, now=now(), run_on_hint=run_on_hint,
                            ccv_public=os.environ.get("CCVSHOP_PUBLIC_KEY", ""),
                            ccv_secret=os.environ.get("CCVSHOP_SECRET_KEY", ""))
    typer.echo(f"added {shop.name} ({shop.plan}), daily run at {shop.run_time} Europe/Amsterdam, "
               f"first run {shop.next_run_at:%Y-%m-%d %H:%M} UTC")
    typer.echo(shop.id)


@shops_app.command("list")
def shops_list(as_json: bool = typer.Option(False, "--json", help="A JSON array, one object per shop.")) -> None:
    """Every shop: id, name, status, plan, last run, open quarantine."""
    import json
    from engine.hosted.runs import ShopState
    with _hosted() as (settings, registry):
        name = _mapping_name(Path(settings.mapping))
        rows = []
        for shop in registry.all():
            state = ShopState(registry.store, shop.id)
            runs = state.last_runs(name, limit=1)
            row = registry.describe(shop)
            row["last_run"] = ({"outcome": runs[0].outcome, "started_at": runs[0].started_at.isoformat()}
                               if runs else None)
            row["open_quarantine"] = len(state.open_quarantine(name))
            rows.append(row)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no shops yet: `mapper shops add NAME --api-root URL`")
    for r in rows:
        last = f"{r['last_run']['outcome']} {r['last_run']['started_at'][:16]}" if r["last_run"] else "never run"
        trouble = f", {r['failures']} failure(s) in a row: {r['last_error']}" if r["failures"] else ""
        typer.echo(f"{r['id']}  {r['status']:<8} {r['plan']:<5}  {r['name']}  (last run: {last}; "
                   f"quarantine {r['open_quarantine']}; next {r['next_run_at'] or '-'}{trouble})")


@shops_app.command("run")
def shops_run(shop: Optional[str] = typer.Argument(None, metavar="SHOP", help="A shop's id (or --all)."),
              all_shops: bool = typer.Option(False, "--all", help="Every active shop."),
              since: Optional[str] = typer.Option(None, metavar="YYYY-MM-DD", help="Back-fill from this creation date."),
              until: Optional[str] = typer.Option(None, metavar="YYYY-MM-DD", help="Back-fill up to this date.")) -> None:
    """Enqueue a shop's run now (a worker takes it); with --since a back-fill."""
    from engine.hosted.worker import enqueue_run
    _day(since, "--since"), _day(until, "--until")
    if until and not since:
        typer.echo("error: --until needs --since", err=True)
        raise typer.Exit(EXIT_CONFIG)
    if bool(shop) == all_shops:
        typer.echo("error: name one SHOP or give --all", err=True)
        raise typer.Exit(EXIT_CONFIG)
    with _hosted() as (settings, registry):
        ids = [s.id for s in registry.all() if s.status == "active"] if all_shops else [registry.get(shop).id]
        if not all_shops and registry.get(shop).status != "active":
            typer.echo(f"error: shop {shop} is {registry.get(shop).status}; `mapper shops enable {shop}` first", err=True)
            raise typer.Exit(EXIT_CONFIG)
    for shop_id in ids:
        fresh = enqueue_run(settings, shop_id, since, until)
        typer.echo(f"{shop_id}: {'enqueued' if fresh else 'a run is already waiting'}")


def _shop_status(shop_id: str, status: str, reason: Optional[str]) -> None:
    from engine.clock import now
    with _hosted() as (_, registry):
        shop = registry.set_status(shop_id, status, now(), reason)
    typer.echo(f"{shop.id} ({shop.name}) is {shop.status}")


@shops_app.command("disable")
def shops_disable(shop: str = ShopArg, reason: Optional[str] = typer.Option(None, metavar="TEXT")) -> None:
    """Stop a shop's runs (its state and keys are kept); `enable` resumes."""
    _shop_status(shop, "disabled", reason)


@shops_app.command("enable")
def shops_enable(shop: str = ShopArg) -> None:
    """Resume a disabled shop."""
    _shop_status(shop, "active", None)


@shops_app.command("remove")
def shops_remove(shop: str = ShopArg) -> None:
    """Stop serving a shop at once: its keys are deleted; order numbers and dates stay for audit."""
    from engine.clock import now
    with _hosted() as (_, registry):
        removed = registry.remove(shop, now())
    typer.echo(f"{removed.id} ({removed.name}) removed: keys deleted, audit rows kept")


@shops_app.command("reseal")
def shops_reseal() -> None:
    """After a master-key rotation: seal every shop's secrets under MAPPER_MASTER_KEY (the old
    key in MAPPER_MASTER_KEY_OLD); afterwards the old key is no longer needed."""
    with _hosted() as (_, registry):
        count = registry.reseal_all()
    typer.echo(f"resealed the secrets of {count} shop(s) under the current MAPPER_MASTER_KEY")


@app.command()
def worker(concurrency: int = typer.Option(1, min=1, max=64, metavar="N", help="Shops run at once in this process."),
           until_idle: bool = typer.Option(False, "--until-idle", help="Exit once nothing is due or waiting.")) -> None:
    """Hosted mode: run the shops' jobs from the queue (MAPPER_DATABASE), one process per core."""
    import logging
    from engine.hosted.worker import HostedSettings, run_worker
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    run_worker(HostedSettings.from_env(), concurrency=concurrency, until_idle=until_idle)


@app.command()
def explain(mapping: Path = MappingArg,
            code: bool = typer.Option(False, "--code", help="Also print the generated Python.")) -> None:
    """How each expression and template of a mapping runs: a constant, a field path, generated
    Python, or Jinja (and why); with --code, the code, and the stage and writer functions."""
    from collections import Counter
    from engine.expr.codegen import generated_source
    from engine.expr.expressions import how_it_runs
    from engine.config.mapping import load_mapping
    m = load_mapping(mapping)
    rows = sorted(((line, field, *how_it_runs(value)) for field, line, value in m.compiled_values),
                  key=lambda r: (r[0] or 0, r[1]))
    kinds = Counter(kind for _, _, kind, _ in rows)
    typer.echo(f"{mapping}: {len(rows)} expressions and templates: "
               + ", ".join(f"{n} {kind}" for kind, n in kinds.most_common()))
    for line, field, kind, detail in rows:
        shown = detail if kind in ("Jinja", "field path") else ""
        typer.echo(f"  {line or '?':>4}  {field:<48} {kind}" + (f": {shown}" if shown else ""))
        if code and kind == "generated Python":
            typer.echo(f"        {detail}")
    if code:
        from engine.output.document import record_level
        from engine.output.render import writer
        from engine.convert.stages import compile_stages
        typer.echo("\n# the stage functions (engine/convert/stages.py), as generated for this mapping")
        typer.echo(compile_stages(m).source)
        if m.record_element is not None and m.document is not None:
            write = writer(m.record_element, m.replacements, record_level(m.document))
            typer.echo("# the writer of output.record (engine/output/render.py)")
            typer.echo(generated_source(write) or "(not generated)")


@app.command()
def serve(host: str = typer.Option("127.0.0.1", metavar="H", help="Address to listen on (the HTTPS proxy's side)."),
          port: int = typer.Option(8080, min=1, max=65535, metavar="P", help="Port to listen on."),
          forwarded_allow_ips: str = typer.Option("127.0.0.1", "--forwarded-allow-ips", metavar="IPS",
                                                  help="The proxies whose X-Forwarded-For/-Proto are believed.")) -> None:
    """Hosted mode: the App Store, webhooks, operator pages and /metrics (behind an HTTPS proxy)."""
    import logging
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        import uvicorn
        from engine.web.app import create_app
        from engine.web.context import WebSettings
        app_ = create_app(WebSettings.from_env())
    except ImportError as exc:
        typer.echo(f"error: `mapper serve` needs the hosted extras ({exc.name} is missing): "
                   f"pip install 'mapper[hosted]'", err=True)
        raise typer.Exit(EXIT_CONFIG)
    # access logs off: a request line of /hooks/<token>/... holds a subscription's secret
    uvicorn.run(app_, host=host, port=port, proxy_headers=True, forwarded_allow_ips=forwarded_allow_ips,
                access_log=False, server_header=False, timeout_keep_alive=5, limit_concurrency=200)


@debtors_app.command("rekey")
def debtors_rekey(mapping: Path = MappingArg, state: Optional[str] = StateOpt, shop: Optional[str] = ShopOpt,
                  yes: bool = typer.Option(False, "--yes", help="Confirm: the register's entries are deleted.")) -> None:
    """Start the register again under the key now set (when the old key is lost).

    Its entries are keyed hashes of the old key and cannot be converted: they are deleted,
    and known customers get their numbers again from `mapper debtors import`. The number
    sequence stays, so no number is handed out twice."""
    import os
    from engine.clock import now
    from engine.convert.debtors import key_check_value, register_secret
    from engine.config.mapping import load_mapping
    if not yes:
        typer.echo("error: this deletes the register's entries; add --yes to go ahead", err=True)
        raise typer.Exit(EXIT_CONFIG)
    m = load_mapping(mapping)
    variable = m.customer_directory.key_env
    with _open_store(state, shop=shop) as store:
        environ = dict(os.environ)
        if shop:
            environ[variable] = store.secrets.debtor_key
        secret = register_secret(environ, variable)
        gone = store.forget_register(m.name)
        store.set_register_check(m.name, key_check_value(secret), now())
    typer.echo(f"register of {m.name}: {gone} entries deleted, now keyed with {variable}; "
               f"re-import the debtors: `mapper debtors import {mapping} FILE`")


def _report(m, summary, out, stream) -> None:
    from engine.convert.money import dutch
    from engine.output.preview import table

    def say(text: str = "") -> None:
        print(text, file=stream)

    if summary.rows:
        rows, shown = summary.rows, summary.converted + summary.credited
        say(table(m.columns, rows) if len(rows) == shown else
            table(m.columns, rows) + f"\n… {shown - len(rows)} more rows not shown")
        if len(rows) != shown:
            say("Totaal (all orders): " + "  ".join(dutch(t) for t in summary.totals if t is not None))
    else:
        say("No orders to import.")
    if summary.quarantined:
        say()
        say(f"Quarantined ({len(summary.quarantined)}): not in the file; fix them in the shop, they are tried again next run")
        for q in summary.quarantined:
            say(f"  order {q.number} (id {q.shop_id}): {q.reason}")
    if summary.flags:
        say()
        say(f"Flags ({summary.flag_count}): in the file; for the bookkeeper to check")
        for number, message in summary.flags:
            say(f"  order {number}: {message}")
        if summary.flag_count > len(summary.flags):
            say(f"  … {summary.flag_count - len(summary.flags)} more")
    say()
    excluded = sum(summary.excluded.values())
    parts = [f"{summary.converted} orders in the preview", f"{len(summary.quarantined)} quarantined"]
    if summary.credited:
        parts[0] = f"{summary.converted} orders and {summary.credited} credit note(s) in the preview"
    if summary.held_by_plan:
        parts.append(f"{summary.held_by_plan} held by the plan (a run would keep them for later)")
    if excluded:
        why = ", ".join(f"{n} not {c}" if not c.startswith("record.") else f"{n} failing '{c}'" for c, n in summary.excluded.items())
        parts.append(f"{excluded} not counted ({why})")
    if summary.outside_window:
        parts.append(f"{summary.outside_window} outside --since/--until")
    if summary.duplicates:
        parts.append(f"{len(summary.duplicates)} listed twice, taken once (id "
                     f"{', '.join(summary.duplicates[:5])}{' …' if len(summary.duplicates) > 5 else ''})")
    what = "XML validated" if m.record_element is not None else "request bodies built"
    where = " -> stdout" if out == "-" else (f" -> {out}" if out else f" (no --out: {what}, not written)")
    say(", ".join(parts) + where)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
