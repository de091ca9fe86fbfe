"""``kbot eval``: measure retrieval and answer quality on labeled questions."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from bot.cli.main import State, cli
from config import load_config


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
@click.option(
    "--no-threads",
    is_flag=True,
    help="Ask every question on its own, follow-ups too, to measure what their thread's "
    "context is worth.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the measures as JSON.")
@click.pass_obj
def eval_command(
    state: State,
    questions_path: Path,
    config_path: str | None,
    compare_path: Path | None,
    report_path: Path | None,
    extractive: bool,
    no_threads: bool,
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
        runs = [
            (
                state.config.source,
                run(state.runtime(), bar(questions, desc="eval base"), not no_threads),
            )
        ]
        llm = [state.config.llm is not None]
        if compare_path is not None:
            other = Runtime(load_config(compare_path))
            llm.append(other.config.llm is not None)
            try:
                runs.append(
                    (
                        other.config.source,
                        run(other, bar(questions, desc="eval other"), not no_threads),
                    )
                )
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
