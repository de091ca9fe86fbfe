"""``kbot ask``: answer one question from the command line."""

from __future__ import annotations

import json

import click

from bot.cli.main import State, cli


@cli.command()
@click.argument("question")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@click.option(
    "--audience",
    "audiences",
    multiple=True,
    metavar="NAME",
    help="Answer as a member of this audience (repeatable); 'public' documents are always "
    "visible. Default: public only, as in a channel with no audience.",
)
@click.pass_obj
def ask(state: State, question: str, as_json: bool, audiences: tuple[str, ...]) -> None:
    """Ask a QUESTION and print the answer with its sources."""
    from bot.answer.types import Requester

    rt = state.runtime()
    rt.answering.validate(question)
    if rt.store.count() == 0:
        # Otherwise every question "abstains", which reads as a gap in the knowledge.
        raise click.ClickException(
            f"the index in {state.config.storage.data_dir} is empty; run `kbot sync` first"
        )
    answer = rt.answering.ask(question, Requester(platform="cli", audiences=frozenset(audiences)))
    if as_json:
        click.echo(json.dumps(answer.as_json(), indent=2))
        return
    click.echo(answer.text)
    if answer.citations:
        click.echo("\nSources:" if not answer.abstained else "\nClosest sources:")
        for c in answer.citations:
            stale = f" · {c.stale}" if c.stale else ""
            click.echo(f"  [{c.n}] {c.title} ({c.connector}: {c.path}){stale}\n      {c.url}")
    click.echo(
        f"\nquery id {answer.query_id} · rate it: kbot feedback add {answer.query_id} up|down",
        err=True,
    )
