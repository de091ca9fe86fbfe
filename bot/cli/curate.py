"""``kbot curate pin|suppress|list|remove``: leads' best bets and suppressions."""

from __future__ import annotations

import getpass
import json

import click

from bot.cli.main import State, cli, iso


def default_by() -> str:
    """Who a command line action is by when ``--by`` is not given: the login name."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"


def _by_option(f):
    return click.option(
        "--by", default=None, metavar="NAME", help="Who makes it (default: your login name)."
    )(f)


@cli.group()
def curate() -> None:
    """Pin a document for a question and its paraphrases, or suppress one for them."""


def _curate(state: State, action: str, question: str, connector: str, path: str, by: str | None):
    c = state.runtime().curations.add(action, question, connector, path, by or default_by())
    click.echo(f"{c.action} #{c.id}: {c.connector}:{c.path} ({c.title}) for “{c.question}”")


def _curation_command(action: str, doc: str):
    @curate.command(action, help=doc)
    @click.option("--question", required=True, metavar="TEXT", help="The question it is for.")
    @click.option("--connector", required=True, metavar="NAME", help="The document's connector.")
    @click.option(
        "--path", "path", required=True, metavar="DOC_PATH", help="The document's path in it."
    )
    @_by_option
    @click.pass_obj
    def command(state: State, question: str, connector: str, path: str, by: str | None) -> None:
        _curate(state, action, question, connector, path, by)

    return command


_curation_command(
    "pin",
    "Put DOC_PATH first for the question and its close paraphrases, for askers who may see "
    "it (a best bet).",
)
_curation_command(
    "suppress", "Leave DOC_PATH out of the answers to the question and its close paraphrases."
)


@curate.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.option("--all", "include_removed", is_flag=True, help="Include removed curations.")
@click.pass_obj
def curate_list(state: State, as_json: bool, include_removed: bool) -> None:
    """List curations, newest first. A broken one names a document no longer indexed: it is
    ignored in ranking until the document is back, or it is removed."""
    views = state.runtime().curations.list(include_removed=include_removed)
    if as_json:
        click.echo(json.dumps([v.as_json() for v in views], indent=2, ensure_ascii=False))
        return
    if not views:
        click.echo("no curations")
        return
    for v in views:
        flags = [f for f, on in (("BROKEN", v.broken), ("removed", not v.active)) if on]
        state_ = f" [{', '.join(flags)}]" if flags else ""
        click.echo(
            f"#{v.id} {v.action}{state_} {v.connector}:{v.path}"
            f"{f' ({v.title})' if v.title else ' (no longer indexed)'}\n"
            f"    for “{v.question}” by {v.created_by} at {iso(v.created_at)}"
            + (f", removed by {v.removed_by} at {iso(v.removed_at)}" if v.removed_at else "")
        )


@curate.command("remove")
@click.argument("curation_id", type=int)
@_by_option
@click.pass_obj
def curate_remove(state: State, curation_id: int, by: str | None) -> None:
    """Undo the curation CURATION_ID (it stays in `kbot curate list --all`)."""
    v = state.runtime().curations.remove(curation_id, by or default_by())
    click.echo(f"removed {v.action} #{v.id} ({v.connector}:{v.path})")
