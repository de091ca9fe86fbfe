"""``kbot cost``: project the monthly cost of generated answers."""

from __future__ import annotations

import json

import click

from bot.cli.main import State, cli


@cli.command()
@click.option(
    "--requests-per-day",
    type=click.IntRange(min=1),
    required=True,
    metavar="N",
    help="Expected questions per day.",
)
@click.option(
    "--model",
    "models",
    multiple=True,
    metavar="M",
    help="Price this model (repeatable). Default: the configured one and every model with a "
    "built-in price, side by side.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the projection as JSON.")
@click.pass_obj
def cost(state: State, requests_per_day: int, models: tuple[str, ...], as_json: bool) -> None:
    """Project the monthly cost of generated answers at p50 and p95 tokens per request, from
    the model calls in the query log (real traffic, else a `kbot eval` run with an llm:)."""
    from bot.review.cost import CostError, format_projection, logged_calls, project

    try:
        result = project(
            state.config, logged_calls(state.runtime().db), requests_per_day, list(models)
        )
    except CostError as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(format_projection(result))
