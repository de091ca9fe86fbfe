"""The ``web`` connector: a docs website, read from its sitemap or crawled from start URLs.

A document's id is its URL *after redirects*, so a page that moved (``/old`` now answers
``301 → /new``) is indexed once, as ``/new``, and ``/old`` is pruned: a move between two
syncs is reflected exactly. The redirect is recorded in the mirror and in the document's
``redirected_from`` metadata.

Every sync walks the whole site once (``list_ids`` must know every page to prune the gone
ones), but cheaply: each page is requested with the ETag / Last-Modified it had last time
and a ``304 Not Modified`` costs no download, and with a sitemap a page whose ``lastmod``
did not change is not requested at all. The mirror (``mirror``) keeps what was last
extracted from each page, so a ``304`` page can still be handed to the indexer whenever it
needs it (a first or full sync, a new embedding model, a page it has not indexed yet).
``changed_since`` yields the pages whose text changed at or after the given time by this
connector's own observation, so a change fetched by a run whose sync then failed is still
delivered by the next run.

What a sync may delete is decided by what the site says, never by a failure:

- ``404``/``410``, a ``noindex`` page, a page no longer listed (or linked), a redirect out
  of ``allowed_prefix``, ``401``/``403`` on one page: gone, pruned from the index;
- ``5xx``, ``429``, timeouts, connection errors: retried with backoff (``Retry-After``
  honoured); a page that still fails keeps its indexed version (it stays in ``list_ids``, is
  not re-read, and is reported as a problem). A failing page's links from the last run are
  still followed, so its subtree is not lost either;
- the sitemap, ``robots.txt`` or a start URL unreachable, or ``max_consecutive_failures``
  pages failing in a row: the site is down, ``ConnectorError``, and the index was left as
  it was.

The parts: ``discovery`` (sitemaps, crawl, robots.txt), ``fetching`` (throttled, retried,
conditional requests), ``extraction`` (main content to Markdown), ``mirror`` (the state
between syncs), ``connector`` (the protocol and what each answer means).
"""

from connectors.web.config import WebConfig
from connectors.web.connector import WebConnector
from connectors.web.discovery import parse_sitemap
from connectors.web.extraction import Extracted, extract_page
from connectors.web.urls import normalize_url

__all__ = [
    "Extracted",
    "WebConfig",
    "WebConnector",
    "extract_page",
    "normalize_url",
    "parse_sitemap",
]
