"""mapper: the command line. Imports stay inside the commands so that --help is fast."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Turn shop orders into accounting import files, as a mapping declares.")

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG, EXIT_QUARANTINE, EXIT_BUSY = 0, 1, 2, 3, 4

MappingArg = typer.Argument(..., help="The mapping file, e.g. mappings/ccvshop_asperion.yaml")


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
    from engine.errors import MapperError
    from engine.mapping import load_mapping
    from engine.document import Validator
    try:
        m = load_mapping(mapping)
        Validator(m.xsd_path)
    except MapperError as exc:
        _fail(exc)
    typer.echo(f"{mapping}: ok (mapping '{m.name}')")


@app.command("dry-run")
def dry_run(
    mapping: Path = MappingArg,
    fixtures: Optional[Path] = typer.Option(None, help="Read orders from this directory (one JSON file per order) instead of the shop."),
    sandbox: bool = typer.Option(False, "--sandbox", help="Run against the bundled demo shop on a loopback simulator (no credentials)."),
    since: Optional[str] = typer.Option(None, help="Only orders created on or after this date (YYYY-MM-DD, UTC)."),
    until: Optional[str] = typer.Option(None, help="Only orders created on or before this date (YYYY-MM-DD, UTC)."),
    out: Optional[str] = typer.Option(None, help="Write the XML here; '-' for stdout. Without it the XML is built and validated, not written."),
) -> None:
    """Preview: run every stage except delivery. Writes nothing but --out."""
    from engine.errors import MapperError
    from engine.preview_run import dry_run as run_preview
    from engine.sources.open import http_errors

    since_d, until_d = _day(since, "--since"), _day(until, "--until")
    report = sys.stderr if out == "-" else sys.stdout
    try:
        with _mapping_and_source(mapping, fixtures, sandbox) as (m, source, default_since):
            window = _window(m, since_d or default_since, until_d, fixtures is not None)
            records = source.records(window)
            if out == "-":
                summary = run_preview(m, records, sys.stdout.buffer, since=since_d, until=until_d)
                sys.stdout.buffer.flush()
            elif out:
                with _atomic(Path(out)) as f:
                    summary = run_preview(m, records, f, since=since_d, until=until_d)
            else:
                summary = run_preview(m, records, None, since=since_d, until=until_d)
    except MapperError as exc:
        _fail(exc)
    except http_errors() as exc:
        _fail(exc)
    _report(m, summary, out, report)


def _window(m, since: Optional[date], until: Optional[date], offline: bool) -> dict:
    """The poll window for the shop's API: --since/--until, else the mapping's look-back."""
    from datetime import timedelta
    from engine.clock import now
    if since is None and not offline:
        since = now().date() - timedelta(days=m.look_back_days)
    return {"start": since.isoformat() if since else "", "end": until.isoformat() if until else ""}


def _mapping_and_source(mapping: Path, fixtures: Optional[Path], sandbox: bool):
    """Load the mapping and open its source: fixtures, the sandbox simulator, or the shop."""
    import contextlib
    from engine.mapping import load_mapping
    from engine.sources.open import open_source, sandbox_environment

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
        with sandbox_environment(first.raw, str(mapping)) as env:
            m = load_mapping(mapping, environ=env)
            spec_since = (m.raw.get("sandbox") or {}).get("since")
            source = open_source(m)
            try:
                yield m, source, date.fromisoformat(spec_since) if spec_since else None
            finally:
                source.close()

    return cm()


def _atomic(target: Path):
    """Write to a temporary file beside ``target`` and rename it into place on success."""
    import contextlib
    import os
    import tempfile

    @contextlib.contextmanager
    def cm():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    return cm()


def _report(m, summary, out, stream) -> None:
    from engine.money import dutch
    from engine.preview import table

    def say(text: str = "") -> None:
        print(text, file=stream)

    if summary.rows:
        rows = summary.rows
        say(table(m.columns, rows) if len(rows) == summary.converted else
            table(m.columns, rows) + f"\n… {summary.converted - len(rows)} more orders not shown")
        if len(rows) != summary.converted:
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
        say(f"Flags ({len(summary.flags)}): in the file; for the bookkeeper to check")
        for number, message in summary.flags:
            say(f"  order {number}: {message}")
    say()
    excluded = sum(summary.excluded.values())
    parts = [f"{summary.converted} orders in the preview", f"{len(summary.quarantined)} quarantined"]
    if excluded:
        why = ", ".join(f"{n} not {c}" if not c.startswith("record.") else f"{n} failing '{c}'" for c, n in summary.excluded.items())
        parts.append(f"{excluded} not counted ({why})")
    if summary.outside_window:
        parts.append(f"{summary.outside_window} outside --since/--until")
    where = " -> stdout" if out == "-" else (f" -> {out}" if out else " (no --out: XML validated, not written)")
    say(", ".join(parts) + where)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
