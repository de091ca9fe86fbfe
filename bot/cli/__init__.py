"""The ``kbot`` command line: one module per command group, each a thin shell over the same
services the bot uses (``bot.cli.main`` holds the group, its options and error handling)."""

from bot.cli import (
    ask,
    connectors,
    cost,
    curate,
    db,
    eval,
    feedback,
    report,
    review,
    serve,
    sync,
    trace,
)
from bot.cli.main import cli, main

__all__ = [
    "ask",
    "cli",
    "connectors",
    "cost",
    "curate",
    "db",
    "eval",
    "feedback",
    "main",
    "report",
    "review",
    "serve",
    "sync",
    "trace",
]
