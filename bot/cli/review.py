"""``kbot review list|right|pick|gap|dismiss|correct``: the human review queue."""

from __future__ import annotations

import json

import click

from bot.cli.curate import default_by
from bot.cli.main import State, cli, iso


@cli.group()
def review() -> None:
    """Review abstained, 👎 and low-confidence answers."""


def _queue(state: State):  # -> bot.review.queue.ReviewQueue
    from bot.review.queue import review_queue

    return review_queue(state.runtime())


@review.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.pass_obj
def review_list(state: State, as_json: bool) -> None:
    """The questions waiting for review, most recently asked first: why (downvoted,
    abstained or low_confidence), when, and how often."""
    items = _queue(state).items()
    if as_json:
        click.echo(json.dumps([i.as_json() for i in items], indent=2, ensure_ascii=False))
        return
    if not items:
        click.echo("nothing waits for review")
        return
    for i in items:
        times = f", asked {i.asked}×" if i.asked > 1 else ""
        click.echo(f"{i.query_id}  {i.why:<14} {iso(i.asked_at)}{times}\n    {i.question}")


def _done(r, where: str = "") -> None:  # r: bot.review.queue.Reviewed
    what = f" {r.connector}:{r.path} (pin #{r.curation_id})" if r.curation_id else ""
    what += f", posted into {where}" if where else ""
    click.echo(f"{r.outcome}{what}: {len(r.query_ids)} answer(s) left the queue")


def _action(name: str, method: str, doc: str):
    @review.command(name, help=doc)
    @click.argument("query_id")
    @click.option("--by", default=None, metavar="NAME", help="Reviewer (default: login name).")
    @click.pass_obj
    def command(state: State, query_id: str, by: str | None) -> None:
        _done(getattr(_queue(state), method)(query_id, by or default_by()))

    return command


_action("right", "right", "Mark the answer QUERY_ID right (its citations label an eval case).")
_action("gap", "gap", "Mark QUERY_ID a content gap: nothing indexed answers it yet.")
_action("dismiss", "dismiss", "Dismiss QUERY_ID: not worth acting on.")


@review.command("pick")
@click.argument("query_id")
@click.option("--connector", required=True, metavar="NAME", help="The document's connector.")
@click.option("--path", required=True, metavar="DOC_PATH", help="The document's path in it.")
@click.option("--by", default=None, metavar="NAME", help="Reviewer (default: login name).")
@click.pass_obj
def review_pick(state: State, query_id: str, connector: str, path: str, by: str | None) -> None:
    """DOC_PATH answers QUERY_ID: pin it for the question and its paraphrases, and label
    the question's eval case with it."""
    _done(_queue(state).pick(query_id, connector, path, by or default_by()))


@review.command("correct")
@click.argument("query_id")
@click.option("--text", required=True, metavar="TEXT", help="The corrected answer.")
@click.option("--connector", default=None, metavar="NAME", help="A document it cites: connector.")
@click.option("--path", default=None, metavar="DOC_PATH", help="The document's path in it.")
@click.option("--by", default=None, metavar="NAME", help="Reviewer (default: login name).")
@click.pass_obj
def review_correct(
    state: State, query_id: str, text: str, connector: str | None, path: str | None, by: str | None
) -> None:
    """Post TEXT as a correction, attributed to the reviewer, into the Slack thread or Teams
    conversation QUERY_ID was asked in (with feedback.post_corrections: true); with
    --connector and --path it cites that document and pins it as `pick` does. Nothing is
    recorded when the platform refuses it: the question stays queued."""
    import asyncio

    from bot.review.corrections import OFF, Corrections

    corrections = Corrections(state.runtime())
    if not corrections.enabled:
        raise click.ClickException(OFF)
    # A CorrectionError (NotPosted too) is a ReviewError: the CLI prints it and exits 1.
    done = asyncio.run(corrections.correct(query_id, text, by or default_by(), connector, path))
    _done(done.reviewed, done.destination.where)
