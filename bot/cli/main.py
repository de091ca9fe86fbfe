"""The ``kbot`` command line. Each command is a thin shell over the same services the bot uses."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from config import ConfigError, KbotConfig, load_config

log = logging.getLogger("kbot")


def _known_errors() -> tuple[type[Exception], ...]:
    from bot.answer.feedback import FeedbackError
    from bot.answer.types import QuestionError
    from db import DatabaseError
    from indexer.embeddings import EmbeddingError
    from indexer.lock import IndexLockedError
    from indexer.store import StoreError

    return (
        ConfigError,
        QuestionError,
        FeedbackError,
        DatabaseError,
        EmbeddingError,
        IndexLockedError,
        StoreError,
    )


class KbotGroup(click.Group):
    """Turns every failure into a one-line message on stderr and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except _known_errors() as e:
            raise click.ClickException(str(e)) from None
        except Exception as e:
            log.debug("unexpected error", exc_info=True)
            raise click.ClickException(
                f"internal error: {type(e).__name__}: {e} (run `kbot -v ...` for details)"
            ) from None


class _State:
    def __init__(self, config_path: str | None, log_json: bool = False):
        self.config_path = config_path
        self.log_json = log_json
        self._config: KbotConfig | None = None
        self._runtime = None

    @property
    def config(self) -> KbotConfig:
        if self._config is None:
            self._config = load_config(self.config_path)
            _observe(self._config, self.log_json)
        return self._config

    def runtime(self, progress: bool = False):  # -> bot.runtime.Runtime
        if self._runtime is None:
            from bot.runtime import Runtime

            self._runtime = Runtime(self.config, _progress_bars if progress else None)
        return self._runtime

    def close(self) -> None:
        if self._runtime is not None:
            self._runtime.close()


def _observe(config: KbotConfig, log_json: bool) -> None:
    """Apply a loaded config's observability: secrets redacted from logs, JSON lines when
    asked for, and OpenTelemetry spans when an OTLP endpoint is set."""
    from bot.ops import logs, observer, otel

    logs.use_config(config, json_logs=log_json)
    otel.setup(config.observability)
    observer.install()


def _progress_bars(name: str, total: int | None):  # -> indexer.sync.Progress
    from tqdm import tqdm

    # tqdm hides itself when stderr is not a terminal (CI logs, pipes).
    return tqdm(
        total=total, desc=f"sync {name}", unit="doc", file=sys.stderr, disable=None, leave=False
    )


@click.group(cls=KbotGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    help="Config file (default: $KBOT_CONFIG, then config/kbot.yaml).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug details to stderr.")
@click.option(
    "--log-json",
    is_flag=True,
    envvar="KBOT_LOG_JSON",
    help="Log one JSON object per line with its request id (also observability.json_logs).",
)
@click.version_option(package_name="kbot")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: bool, log_json: bool) -> None:
    """kbot: answers questions from your runbooks and wikis, with cited sources."""
    from bot.ops import logs

    logs.setup(json_logs=log_json, verbose=verbose)
    for noisy in (
        "chromadb",
        "httpx",
        "sentence_transformers",
        "apscheduler",
        "alembic",
        "bm25s",
    ):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)
    state = _State(config_path, log_json)
    ctx.obj = state
    ctx.call_on_close(state.close)


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--full", is_flag=True, help="Re-read every document, not only what changed.")
@click.option(
    "--allow-mass-delete",
    is_flag=True,
    help="Let a sync delete more than indexer.max_delete_fraction of a connector's documents.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.pass_obj
def sync(
    state: _State, names: tuple[str, ...], full: bool, allow_mass_delete: bool, as_json: bool
) -> None:
    """Sync connectors (all, or the NAMES given) into the index."""
    for n in names:
        try:
            state.config.connector(n)  # unknown names fail before anything is loaded
        except KeyError as e:
            raise click.BadParameter(e.args[0], param_hint="NAMES") from None
    rt = state.runtime(progress=not as_json)
    results = rt.indexer.sync(names or None, full=full, allow_mass_delete=allow_mass_delete)
    if not results and not as_json:
        click.echo(f"no connectors configured in {state.config.source}", err=True)
    if as_json:
        click.echo(json.dumps({"connectors": [r.as_json() for r in results]}, indent=2))
    else:
        for r in results:
            status = "ok" if r.ok else "FAILED"
            click.echo(
                f"{r.name}: {status}  added {r.added}, updated {r.updated}, deleted {r.deleted}, "
                f"unchanged {r.unchanged}, failed {r.failed}; {r.chunks} chunks"
            )
            for p in r.problems:
                click.echo(f"  skipped {p}", err=True)
            if r.error:
                click.echo(f"  error: {r.error}", err=True)
    if not all(r.ok for r in results):
        sys.exit(1)


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
def ask(state: _State, question: str, as_json: bool, audiences: tuple[str, ...]) -> None:
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
            click.echo(f"  [{c.n}] {c.title} ({c.connector}: {c.path})\n      {c.url}")
    click.echo(
        f"\nquery id {answer.query_id} · rate it: kbot feedback add {answer.query_id} up|down",
        err=True,
    )


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
def cost(state: _State, requests_per_day: int, models: tuple[str, ...], as_json: bool) -> None:
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


@cli.command("eval")
@click.option(
    "--questions",
    "questions_path",
    required=True,
    metavar="FILE.jsonl",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Questions with known answers, one JSON object per line.",
)
@click.option(
    "--config",
    "config_path",
    default=None,
    metavar="PATH",
    help="The config to evaluate (default: the one given to kbot).",
)
@click.option(
    "--compare",
    "compare_path",
    default=None,
    metavar="OTHER_CONFIG",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Also evaluate this config and show the difference per measure.",
)
@click.option(
    "--report",
    "report_path",
    default=None,
    metavar="PATH",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where the per-question report goes (default: <data_dir>/eval-report.jsonl).",
)
@click.option(
    "--extractive",
    is_flag=True,
    help="Evaluate the config without its llm: (the extractive answerer), e.g. to --compare "
    "it with the same config's model on quality, latency and cost.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the measures as JSON.")
@click.pass_obj
def eval_command(
    state: _State,
    questions_path: Path,
    config_path: str | None,
    compare_path: Path | None,
    report_path: Path | None,
    extractive: bool,
    as_json: bool,
) -> None:
    """Measure retrieval and answer quality on a file of questions with known answers."""
    from tqdm import tqdm

    from bot.review.evaluation import (
        EvalError,
        difference,
        format_comparison,
        format_result,
        load_questions,
        run,
        summarize,
        write_report,
    )
    from bot.runtime import Runtime

    if config_path is not None:
        state.config_path = config_path  # nothing is loaded yet, so this takes effect
    if extractive:
        state._config = state.config.model_copy(update={"llm": None})

    # tqdm hides itself when stderr is not a terminal.
    bar = functools.partial(tqdm, unit="q", file=sys.stderr, disable=None, leave=False)
    try:
        questions = load_questions(questions_path)
        runs = [(state.config.source, run(state.runtime(), bar(questions, desc="eval base")))]
        llm = [state.config.llm is not None]
        if compare_path is not None:
            other = Runtime(load_config(compare_path))
            llm.append(other.config.llm is not None)
            try:
                runs.append((other.config.source, run(other, bar(questions, desc="eval other"))))
            finally:
                other.close()
    except EvalError as e:
        raise click.ClickException(str(e)) from None

    results = [summarize(outcomes, m) for (_, outcomes), m in zip(runs, llm, strict=True)]
    report = report_path or state.config.storage.data_dir / "eval-report.jsonl"
    write_report(report, runs)
    if len(results) == 2:
        diff = difference(*results)
        if as_json:
            out = {"base": results[0], "other": results[1], "diff": diff}
            click.echo(json.dumps(out, indent=2))
        else:
            click.echo(f"base:  {runs[0][0]}\nother: {runs[1][0]}\n{len(questions)} questions")
            click.echo(format_comparison(results[0], results[1], diff))
    elif as_json:
        click.echo(json.dumps(results[0], indent=2))
    else:
        click.echo(f"{runs[0][0]}: {len(questions)} questions from {questions_path}")
        click.echo(format_result(results[0]))
    click.echo(f"per-question report: {report}", err=True)


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
    state: _State, host: str | None, port: int | None, no_scheduler: bool, slack_socket_mode: bool
) -> None:
    """Serve the web chat (and Slack when SLACK_* credentials are set), syncing on schedule
    in-process."""
    from bot.server import run_server

    cfg = state.config
    run_server(
        state.runtime(),
        host or cfg.server.host,
        cfg.server.port if port is None else port,
        scheduler=not no_scheduler,
        slack_socket_mode=slack_socket_mode,
    )


@cli.command()
@click.pass_obj
def worker(state: _State) -> None:
    """Run scheduled syncs only, in the foreground."""
    from bot.review.digest import digest_jobs
    from indexer.scheduler import build_scheduler

    rt = state.runtime()
    jobs = digest_jobs(state.config, rt.db)
    scheduler = build_scheduler(state.config, rt.indexer, blocking=True, jobs=jobs)
    log.info("worker started with %d connector job(s)", len(state.config.connectors))
    with contextlib.suppress(KeyboardInterrupt, SystemExit):
        scheduler.start()


@cli.group()
def connectors() -> None:
    """Inspect the configured connectors."""


@connectors.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
def connectors_list(state: _State, as_json: bool) -> None:
    """Each connector with its last run, counts, next run and freshness."""
    from bot.ops.status import connector_status

    rows = connector_status(state.config, state.runtime().db)
    if as_json:
        click.echo(json.dumps({"connectors": rows}, indent=2, default=_iso))
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
                f"  last run {_iso(last['finished_at'] or last['started_at'])}: {last['status']}, "
                f"+{last['added']} ~{last['updated']} -{last['deleted']} ={last['unchanged']}"
                + (f", error: {last['error']}" if last["error"] else "")
            )
        click.echo(
            f"  {r['documents']} documents, {r['chunks']} chunks; next run {_iso(r['next_run'])}; "
            f"freshness {r['freshness']}"
        )


@connectors.command("test")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def connectors_test(state: _State, name: str, as_json: bool) -> None:
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
def report(state: _State, since: str, fmt: str, out: Path | None, post_digest: bool) -> None:
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


@cli.command("trace")
@click.argument("query_id")
@click.option("--json", "as_json", is_flag=True, help="Print the trace as JSON.")
@click.pass_obj
def trace_command(state: _State, query_id: str, as_json: bool) -> None:
    """Show everything behind the answer QUERY_ID: requester, question, retrieved chunks
    and scores, prompt and model, tokens, cost, latency per stage, fallback, feedback."""
    from bot.review.trace import UnknownTrace, format_trace, trace

    try:
        t = trace(state.runtime().db, query_id)
    except UnknownTrace as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps(t, indent=2, default=_iso))
    else:
        click.echo(format_trace(t))


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
    state: _State, query_id: str, vote: str, reason: str | None, user: str | None
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
    help="Write the voted questions here, in the `kbot eval` question format.",
)
@click.option("--include-up", is_flag=True, help="Export 👍 questions too (default: 👎 only).")
@click.pass_obj
def feedback_export(state: _State, path: Path, include_up: bool) -> None:
    """Turn voted questions into eval cases; a lead fills in each one's relevant documents
    and answer keywords to grow the labeled set."""
    cases = state.runtime().feedback.eval_cases(include_up=include_up)
    path.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in cases))
    click.echo(
        f"wrote {len(cases)} question(s) to {path}; fill in 'relevant' and 'answer_keywords' "
        "(and correct 'kind') before running kbot eval on it"
    )


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return "-" if value is None else str(value)


def main() -> None:
    cli(prog_name="kbot")
