"""The web connector's mirror: what it last extracted from each page, in
``<data_dir>/web/<name>.json``, so a ``304 Not Modified`` page (or one whose sitemap
``lastmod`` did not change) can be handed to the indexer without downloading it again.

Each page's entry holds its validators (ETag, Last-Modified, lastmod), title, text, format,
links (crawls only), when its text last changed, and the URLs that redirect to it. A page
that stopped being listed or served is kept for ``KEEP_GONE``, so a sitemap that lists too
little for one run (a broken deploy the mass-deletion guard refused) costs no re-download.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from connectors.web.extraction import EXTRACTOR_VERSION

log = logging.getLogger(__name__)

STATE_FORMAT = 1
# How long the mirror keeps a page that stopped being listed or served.
KEEP_GONE = timedelta(days=7)

Pages = dict[str, dict[str, Any]]


def load(path: Path, label: str) -> tuple[Pages, dict[str, str]]:
    """The pages and aliases (redirecting URL -> page) of the last run; empty when there is
    no mirror, it cannot be read, or an older format or extractor wrote it."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, {}
    except (OSError, ValueError) as e:
        log.warning("%s: ignoring unreadable state %s (%s)", label, path, e)
        return {}, {}
    ok = (
        isinstance(state, dict)
        and state.get("format") == STATE_FORMAT
        and state.get("extractor") == EXTRACTOR_VERSION
    )
    if not ok:
        return {}, {}
    return state.get("pages") or {}, state.get("aliases") or {}


def save(path: Path, live: Pages, previous: Pages, aliases: dict[str, str]) -> None:
    """Write the mirror atomically: every page that exists now, the previous run's pages
    that disappeared less than ``KEEP_GONE`` ago, and the aliases that lead to either."""
    pages = dict(live)
    for entry in pages.values():
        entry.pop("gone_at", None)
    now = datetime.now(UTC)
    for k, v in previous.items():
        if k in pages:
            continue
        gone_at = datetime.fromisoformat(v.get("gone_at") or now.isoformat())
        if now - gone_at < KEEP_GONE:
            pages[k] = {**v, "gone_at": gone_at.isoformat()}
    state = {
        "format": STATE_FORMAT,
        "extractor": EXTRACTOR_VERSION,
        "pages": pages,
        "aliases": {k: v for k, v in aliases.items() if v in pages},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state), encoding="utf-8")
    os.replace(tmp, path)
