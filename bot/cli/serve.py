"""``kbot serve`` and ``kbot worker``: the web server, and the scheduled syncs alone."""

from __future__ import annotations

import contextlib

import click

from bot.cli.main import State, cli, log


@cli.command()
@click.option("--host", default=None, help="Address to listen on (default: server.host).")
@click.option("--port", type=int, default=None, help="Port (default: server.port).")
@click.option(
    "--no-scheduler",
    is_flag=True,
    help="Do not run scheduled syncs in this process (another process owns the index).",
)
@click.option(
    "--slack-socket-mode",
    is_flag=True,
    help="Connect to Slack over Socket Mode (needs SLACK_APP_TOKEN and SLACK_BOT_TOKEN) "
    "instead of serving /slack/events.",
)
@click.pass_obj
def serve(
    state: State, host: str | None, port: int | None, no_scheduler: bool, slack_socket_mode: bool
) -> None:
    """Serve the web chat (and Slack when SLACK_* credentials are set), syncing on schedule
    in-process."""
    from bot.server import run_server

    cfg = state.config
    rt = state.runtime()
    rt.redis  # noqa: B018 - an unreachable Redis stops start-up with one line
    run_server(
        rt,
        host or cfg.server.host,
        cfg.server.port if port is None else port,
        scheduler=not no_scheduler,
        slack_socket_mode=slack_socket_mode,
    )


@cli.command()
@click.pass_obj
def worker(state: State) -> None:
    """Run scheduled syncs (and the report digest) only, in the foreground.

    The schedule is kept in the database. Run one worker: a second one on the same
    database skips every sync the first is running, and says so."""
    from bot.review.digest import digest_jobs
    from indexer.scheduler import build_scheduler

    rt = state.runtime()
    rt.redis  # noqa: B018 - an unreachable Redis stops start-up with one line
    jobs = digest_jobs(state.config, rt.db)
    scheduler = build_scheduler(state.config, rt.indexer, blocking=True, jobs=jobs, store=rt.db)
    log.info(
        "worker started with %d connector job(s); schedule kept in %s",
        len(state.config.connectors),
        rt.db.where,
    )
    with contextlib.suppress(KeyboardInterrupt, SystemExit):
        scheduler.start()
