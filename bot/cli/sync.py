"""``kbot sync``: sync connectors into the index."""

from __future__ import annotations

import json
import sys

import click

from bot.cli.main import State, cli


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--full", is_flag=True, help="Re-read every document, not only what changed.")
@click.option(
    "--allow-mass-delete",
    is_flag=True,
    help="Let a sync delete more than indexer.max_delete_fraction of a connector's documents.",
)
@click.option(
    "--reindex",
    is_flag=True,
    help="On a Chroma server (storage.chroma_url), replace an index built with another "
    "embedding model; web processes find it empty until this sync ends.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.pass_obj
def sync(
    state: State,
    names: tuple[str, ...],
    full: bool,
    allow_mass_delete: bool,
    reindex: bool,
    as_json: bool,
) -> None:
    """Sync connectors (all, or the NAMES given) into the index."""
    for n in names:
        try:
            state.config.connector(n)  # unknown names fail before anything is loaded
        except KeyError as e:
            raise click.BadParameter(e.args[0], param_hint="NAMES") from None
    rt = state.runtime(progress=not as_json, reindex=reindex)
    results = rt.indexer.sync(names or None, full=full, allow_mass_delete=allow_mass_delete)
    if not results and not as_json:
        click.echo(f"no connectors configured in {state.config.source}", err=True)
    if as_json:
        click.echo(json.dumps({"connectors": [r.as_json() for r in results]}, indent=2))
    else:
        for r in results:
            if r.skipped:
                click.echo(f"{r.name}: skipped ({r.skipped})")
                continue
            status = "ok" if r.ok else "FAILED"
            click.echo(
                f"{r.name}: {status}  added {r.added}, updated {r.updated}, deleted {r.deleted}, "
                f"unchanged {r.unchanged}, failed {r.failed}; {r.chunks} chunks"
            )
            for p in r.problems:
                click.echo(f"  skipped {p}", err=True)
            if r.skipped_note:
                click.echo(f"  {r.skipped_note}", err=True)
            if r.error:
                click.echo(f"  error: {r.error}", err=True)
    if not all(r.ok for r in results):
        sys.exit(1)
