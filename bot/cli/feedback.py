"""``kbot feedback add|export``: record votes, and turn them into eval cases."""

from __future__ import annotations

import json
from pathlib import Path

import click

from bot.cli.main import State, cli


@cli.group()
def feedback() -> None:
    """Record and export feedback on answers."""


@feedback.command("add")
@click.argument("query_id")
@click.argument("vote", type=click.Choice(["up", "down"]))
@click.option("--reason", default=None, help="Why (for 👎: wrong, outdated, not found, ...).")
@click.option("--user", default=None, help="Who votes (default: anonymous).")
@click.pass_obj
def feedback_add(
    state: State, query_id: str, vote: str, reason: str | None, user: str | None
) -> None:
    """Record a 👍 (up) or 👎 (down) on the answer QUERY_ID."""
    v = state.runtime().feedback.record(query_id, vote, user=user, reason=reason)
    click.echo(f"{'changed' if v.changed else 'recorded'} {v.vote} vote on {v.query_id}")


@feedback.command("export")
@click.option(
    "--to-eval",
    "path",
    required=True,
    metavar="FILE.jsonl",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the reviewed and voted questions here, in the `kbot eval` question format.",
)
@click.option("--include-up", is_flag=True, help="Export 👍 questions too (default: 👎 only).")
@click.pass_obj
def feedback_export(state: State, path: Path, include_up: bool) -> None:
    """Turn reviewed and voted questions into eval cases. Reviewed ones (`kbot review`,
    /reports/review) come labeled; for the voted ones nobody reviewed, a lead fills in the
    relevant documents and answer keywords to grow the labeled set."""
    from bot.review.queue import ReviewQueue, export_cases

    rt = state.runtime()
    queue = ReviewQueue(rt.db, rt.config.feedback.review_below)
    cases, labeled = export_cases(queue, rt.feedback.eval_cases(include_up=include_up))
    path.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in cases))
    message = f"wrote {len(cases)} question(s) to {path}, {labeled} labeled by review"
    if len(cases) > labeled:
        message += (
            "; fill in the others' 'relevant' and 'answer_keywords' (and correct 'kind') "
            "before running kbot eval on it"
        )
    click.echo(message)
