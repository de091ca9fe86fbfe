"""``kbot report``: the leads' report over the query log and feedback."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from bot.cli.main import State, cli


@cli.command()
@click.option(
    "--since",
    default="7d",
    show_default=True,
    metavar="PERIOD",
    help="Whole UTC days back, today included (7d, 30d, 2w), or a start date (2024-05-01).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["md", "html", "csv", "json"]),
    default="md",
    show_default=True,
    help="Markdown, a self-contained HTML page with charts, long-format CSV, or JSON.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="PATH",
    help="Write the report here instead of to stdout.",
)
@click.option(
    "--post-digest",
    is_flag=True,
    help="Also post the digest now to reports.digest's Slack channel and/or Teams conversation.",
)
@click.pass_obj
def report(state: State, since: str, fmt: str, out: Path | None, post_digest: bool) -> None:
    """A report for leads over the query log and feedback: volume, answered vs abstained,
    👍/👎 over time, per connector and document, the 👎 answers with their reasons and
    traces, content gaps, stale cited documents, latency per stage, tokens and cost."""
    from bot.review.digest import send_digest
    from bot.review.render import render
    from bot.review.report import ReportError, build_report

    cfg = state.config
    db = state.runtime().db
    try:
        data = build_report(db, cfg, since)
    except ReportError as e:
        raise click.ClickException(f"--since {e}") from None
    base = (cfg.reports.base_url or "").rstrip("/")
    text = render(data, fmt, (lambda qid: f"{base}/reports/trace/{qid}") if base else None)
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        click.echo(f"wrote the {fmt} report to {out}", err=True)
    if post_digest:
        if not cfg.reports.digest.enabled:
            raise click.ClickException(
                f"no digest channel in {cfg.source}: set reports.digest.slack_channel "
                "and/or reports.digest.teams_conversation"
            )
        posted = send_digest(cfg, db)
        for platform, ok in posted.items():
            click.echo(f"digest {'posted to' if ok else 'NOT posted to'} {platform}", err=True)
        if not all(posted.values()):
            sys.exit(1)
