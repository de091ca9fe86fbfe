"""The ``kbot`` group: its options, its error handling, and the state its commands share."""

from __future__ import annotations

import logging
import sys
from datetime import datetime
from typing import Any

import click

from config import ConfigError, KbotConfig, load_config

log = logging.getLogger("kbot")


def _known_errors() -> tuple[type[Exception], ...]:
    from bot.answer.curation import CurationError
    from bot.answer.feedback import FeedbackError
    from bot.answer.types import QuestionError
    from bot.ops.shared import RedisUnavailable
    from bot.review.queue import ReviewError
    from db import DatabaseError
    from indexer.embeddings import EmbeddingError
    from indexer.lock import IndexLockedError
    from indexer.store import StoreError

    return (
        ConfigError,
        QuestionError,
        FeedbackError,
        CurationError,
        ReviewError,
        DatabaseError,
        EmbeddingError,
        IndexLockedError,
        StoreError,
        RedisUnavailable,
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


class State:
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

    def runtime(self, progress: bool = False, reindex: bool = False):  # -> bot.runtime.Runtime
        if self._runtime is None:
            from bot.runtime import Runtime

            self._runtime = Runtime(self.config, progress_bars if progress else None, reindex)
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


def progress_bars(name: str, total: int | None):  # -> indexer.sync.Progress
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
    state = State(config_path, log_json)
    ctx.obj = state
    ctx.call_on_close(state.close)


def iso(value: Any) -> str:
    """A timestamp or value as the commands print it (seconds, ISO 8601; "-" for none)."""
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return "-" if value is None else str(value)


def main() -> None:
    cli(prog_name="kbot")
