"""``kbot connectors list|test``: inspect the configured connectors."""

from __future__ import annotations

import json
import sys

import click

from bot.cli.main import State, cli, iso


@cli.group()
def connectors() -> None:
    """Inspect the configured connectors."""


@connectors.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
def connectors_list(state: State, as_json: bool) -> None:
    """Each connector with its last run, counts, next run and freshness."""
    from bot.ops.status import connector_status

    rows = connector_status(state.config, state.runtime().db)
    if as_json:
        click.echo(json.dumps({"connectors": rows}, indent=2, default=iso))
        return
    if not rows:
        click.echo("no connectors configured")
    for r in rows:
        last = r["last_run"]
        click.echo(f"{r['name']} ({r['type']}, every {r['schedule']}, audience {r['audience']})")
        if last is None:
            click.echo("  never synced")
        else:
            click.echo(
                f"  last run {iso(last['finished_at'] or last['started_at'])}: {last['status']}, "
                f"+{last['added']} ~{last['updated']} -{last['deleted']} ={last['unchanged']}"
                + (f", error: {last['error']}" if last["error"] else "")
            )
        click.echo(
            f"  {r['documents']} documents, {r['chunks']} chunks; next run {iso(r['next_run'])}; "
            f"freshness {r['freshness']}"
        )


@connectors.command("test")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def connectors_test(state: State, name: str, as_json: bool) -> None:
    """Check connector NAME: reach its source with its credentials, fetch one document and
    show what would be indexed (id, title, link, audience, chunks). Writes nothing."""
    from bot.ops.connector_check import check_connector, format_result

    try:
        result = check_connector(state.config, name)
    except KeyError as e:
        raise click.BadParameter(e.args[0], param_hint="NAME") from None
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=2))
    elif result.ok:
        click.echo(format_result(result))
    for p in [] if as_json else result.problems:
        click.echo(f"  skipped {p}", err=True)
    if not result.ok:
        if not as_json:
            click.echo(f"{result.name} ({result.type}): FAILED: {result.error}", err=True)
        sys.exit(1)
