"""``kbot trace``: everything behind one answer."""

from __future__ import annotations

import json

import click

from bot.cli.main import State, cli, iso


@cli.command("trace")
@click.argument("query_id")
@click.option("--json", "as_json", is_flag=True, help="Print the trace as JSON.")
@click.pass_obj
def trace_command(state: State, query_id: str, as_json: bool) -> None:
    """Show everything behind the answer QUERY_ID: requester, question, retrieved chunks
    and scores, prompt and model, tokens, cost, latency per stage, fallback, feedback."""
    from bot.review.trace import UnknownTrace, format_trace, trace

    try:
        t = trace(state.runtime().db, query_id)
    except UnknownTrace as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps(t, indent=2, default=iso))
    else:
        click.echo(format_trace(t))
