"""The ``web`` connector: the protocol (list ids, load all, changed since, load some) over
one walk of the site per sync, and what each visited URL means for the index.

How pages are found is in ``discovery``, how they are requested in ``fetching``, what is
read from them in ``extraction``, and what is kept between syncs in ``mirror``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import httpx

from connectors.base import ConnectorError, Document, DocumentError, state_dir
from connectors.parsing import MAX_FILE_BYTES
from connectors.web import mirror
from connectors.web.config import WebConfig
from connectors.web.discovery import Discovery, Outcome
from connectors.web.extraction import decode, read_page
from connectors.web.fetching import (
    BadRedirect,
    Http,
    LeavesScope,
    Response,
    Unreachable,
    http_time,
)
from connectors.web.urls import title_from_url

log = logging.getLogger(__name__)


class WebConnector:
    """Reads a website; one instance serves one sync run (the walk happens once, lazily)."""

    type_name: ClassVar[str] = "web"

    def __init__(self, config: WebConfig, workdir: Path | None = None):
        self.config = config
        self.state_path = state_dir(workdir, self.type_name) / f"{config.name}.json"
        self.problems: list[DocumentError] = []
        self._label = f"web connector {config.name!r}"
        self._prev_pages: dict[str, dict[str, Any]] = {}
        self._prev_aliases: dict[str, str] = {}
        self._pages: dict[str, dict[str, Any]] = {}  # the mirror after this run's walk
        self._aliases: dict[str, str] = {}
        self._order: list[str] = []  # ids in the order the walk met them
        self._live: set[str] = set()  # ids that exist now: list_ids
        self._skip: set[str] = set()  # live, but not readable this run (failed, malformed)
        self._done = False
        self._http: Http | None = None
        self._discovery: Discovery | None = None

    # -- the protocol

    def list_ids(self) -> set[str]:
        self._ensure_walked()
        return set(self._live)

    def load_all(self) -> Iterator[Document]:
        if self._done:
            yield from self._documents(lambda _, __: True)
            return
        # Not walked yet (e.g. `kbot connectors test`): hand out pages as they are read, so
        # a caller that stops after one page costs one page.
        walk = self._walk()
        try:
            for outcome in walk:
                doc = self._record(outcome)
                if doc is not None:
                    yield doc
        finally:
            walk.close()
        self._finish()

    def changed_since(self, since: datetime) -> Iterator[Document]:
        self._ensure_walked()
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        yield from self._documents(lambda _, e: datetime.fromisoformat(e["changed_at"]) >= since)

    def load(self, ids: set[str]) -> Iterator[Document]:
        """The pages with these ids (final URLs), from the mirror after the walk: the walk
        already fetched what changed, so this costs no request. A page that is gone, or that
        failed this run (already a problem), is not yielded."""
        self._ensure_walked()
        yield from self._documents(lambda doc_id, _: doc_id in ids)

    # -- bookkeeping

    def _ensure_walked(self) -> None:
        if self._done:
            return
        for outcome in self._walk():
            self._record(outcome)
        self._finish()

    def _documents(self, keep: Callable[[str, dict[str, Any]], bool]) -> Iterator[Document]:
        """The readable pages of this run whose id and mirror entry ``keep`` accepts."""
        for doc_id in self._order:
            if doc_id not in self._live or doc_id in self._skip:
                continue
            entry = self._pages[doc_id]
            if keep(doc_id, entry):
                yield self._document(doc_id, entry)

    def _document(self, doc_id: str, entry: dict[str, Any]) -> Document:
        meta = {}
        if entry.get("redirected_from"):
            meta["redirected_from"] = " ".join(entry["redirected_from"])
        return Document(
            connector=self.config.name,
            id=doc_id,
            title=entry["title"],
            url=doc_id,
            text=entry["text"],
            last_modified=datetime.fromisoformat(entry["modified"]),
            audience=self.config.audience,
            format=entry["format"],
            metadata=meta,
        )

    def _record(self, o: Outcome) -> Document | None:
        """Fold one visit into this run's mirror; the document to hand out, if any."""
        if o.kind in ("gone", "excluded", "removed"):
            if o.kind == "removed":
                self.problems.append(
                    DocumentError(o.requested, f"{o.reason}; removed from the index")
                )
            else:
                log.info("%s: %s: %s; not indexed", self._label, o.requested, o.reason)
            return None
        for r in o.redirects:
            self._aliases[r] = o.id
        if o.id in self._live:
            return None  # reached again through another URL or redirect
        self._live.add(o.id)
        self._order.append(o.id)
        if o.redirects and self._prev_aliases.get(o.redirects[0]) != o.id:
            log.info("%s: %s now redirects to %s", self._label, o.redirects[0], o.id)
        if o.entry is not None:
            self._pages[o.id] = o.entry
        if o.kind in ("failed", "malformed"):
            self._skip.add(o.id)
            kept = "the indexed version is kept" if o.kind == "failed" else "skipped"
            self.problems.append(DocumentError(o.id, f"{o.reason}; {kept}"))
            return None
        assert o.entry is not None
        return self._document(o.id, o.entry)

    def _finish(self) -> None:
        """Save the mirror (see connectors.web.mirror)."""
        self._done = True
        live = {k: v for k, v in self._pages.items() if k in self._live}
        mirror.save(self.state_path, live, self._prev_pages, self._aliases)

    # -- the walk

    def _walk(self) -> Iterator[Outcome]:
        """Every URL's outcome, in a stable order; raises ConnectorError when the site is down."""
        self._prev_pages, self._prev_aliases = mirror.load(self.state_path, self._label)
        http = self._http = Http(self.config)
        self._discovery = Discovery(self.config, http, self._label)
        try:
            if self.config.sitemap_url:
                yield from self._discovery.sitemap(self.config.sitemap_url, self._visit_all)
            else:
                yield from self._discovery.crawl(self._visit_all)
        finally:
            http.close()

    def _visit_all(self, targets: list[tuple[str, str | None, int]]) -> Iterator[Outcome]:
        """Visit URLs with ``concurrency`` workers, yielding outcomes in the given order.

        Only a window of requests is in flight, so a consumer that stops (a site found down,
        a caller that wanted one page) leaves no backlog of queued requests behind.
        """
        c = self.config
        failures = 0
        todo = deque(targets)
        pending: deque[Future[Outcome]] = deque()
        with ThreadPoolExecutor(max_workers=c.concurrency, thread_name_prefix="kbot-web") as pool:
            try:
                while todo or pending:
                    while todo and len(pending) < c.concurrency:
                        url, lastmod, depth = todo.popleft()
                        pending.append(pool.submit(self._visit, url, lastmod, depth))
                    outcome = pending.popleft().result()
                    failures = failures + 1 if outcome.kind == "failed" else 0
                    if failures >= c.max_consecutive_failures:
                        raise ConnectorError(
                            f"{self._label}: {failures} pages in a row could not be read "
                            f"(last: {outcome.requested}: {outcome.reason}). The site looks "
                            "down; the index was left as it was."
                        )
                    yield outcome
            finally:
                for f in pending:
                    f.cancel()

    def _visit(self, url: str, lastmod: str | None, depth: int) -> Outcome:
        """Request one page (conditionally when it was read before) and classify the answer."""
        assert self._http is not None and self._discovery is not None
        known_id = self._prev_aliases.get(url, url)
        aliased = [url] if known_id != url else []  # keeps the alias when nothing is learnt
        prev = self._prev_pages.get(known_id)
        if (
            prev is not None
            and lastmod is not None
            and self.config.trust_lastmod
            and prev.get("lastmod") == lastmod
        ):
            return Outcome(
                "not_modified", url, known_id, entry=prev, redirects=aliased, depth=depth
            )
        conditional: dict[str, str] = {}
        # A crawl needs a page's links: a 304 for a page read without them (by a sitemap
        # run of the same connector) would hide them.
        if prev is not None and (not self.config.start_urls or "links" in prev):
            if prev.get("etag"):
                conditional["If-None-Match"] = prev["etag"]
            if prev.get("last_modified"):
                conditional["If-Modified-Since"] = prev["last_modified"]
        try:
            resp = self._http.get(url, conditional=conditional, in_scope=self._discovery.in_scope)
            if resp.status == 304 and resp.url != known_id:
                # Validators of another resource matched; ask again without them.
                prev = None
                resp = self._http.get(url, in_scope=self._discovery.in_scope)
        except Unreachable as e:
            reason = f"unreachable: {e}"
            links = list(prev.get("links", [])) if prev else []
            return Outcome(
                "failed", url, known_id, reason, prev, links, redirects=aliased, depth=depth
            )
        except LeavesScope as e:
            reason = f"redirects to {e.target}, outside allowed_prefix"
            return Outcome("removed", url, url, reason, depth=depth)
        except BadRedirect as e:
            return Outcome("removed", url, url, str(e), depth=depth)
        except (httpx.HTTPError, httpx.InvalidURL) as e:
            reason = f"cannot be read ({type(e).__name__})"
            return Outcome("malformed", url, known_id, reason, prev, redirects=aliased, depth=depth)
        return self._classify(url, lastmod, depth, resp, prev)

    def _classify(
        self,
        url: str,
        lastmod: str | None,
        depth: int,
        resp: Response,
        prev: dict[str, Any] | None,
    ) -> Outcome:
        assert self._discovery is not None
        final = resp.url
        redirects = resp.redirects
        if final != self._prev_aliases.get(url, url):
            prev = None  # the old entry is another URL's: nothing to compare or keep

        def outcome(kind: str, reason: str = "", **kw: Any) -> Outcome:
            return Outcome(
                kind, url, final, reason, redirects=redirects, depth=depth, status=resp.status, **kw
            )

        if final != url and not self._discovery.allowed(final):
            return outcome("excluded", f"redirects to {final}, which robots.txt disallows")
        status = resp.status
        if status == 304 and prev is not None:
            entry = {**prev, "lastmod": lastmod, "redirected_from": redirects}
            return outcome("not_modified", entry=entry, links=list(prev.get("links", [])))
        if status in (404, 410):
            return outcome("gone", f"{status} {resp.reason}")
        if status in (401, 403):
            return outcome("removed", f"{status} {resp.reason}")
        if status != 200:
            return outcome("removed", f"answered {status} {resp.reason}")
        if resp.too_large:
            return outcome("malformed", f"page is over {MAX_FILE_BYTES} bytes", entry=prev)
        ctype = resp.headers.get("content-type", "text/html").split(";")[0].strip().lower()
        try:
            text = decode(resp.body, resp.headers.get("content-type", ""))
        except ValueError as e:
            return outcome("malformed", str(e), entry=prev)
        try:
            page = read_page(ctype, text, final)
        except RecursionError:
            return outcome("malformed", "markup is nested too deeply to read", entry=prev)
        if page is None:
            return outcome("excluded", f"not a page (Content-Type {ctype})")
        fmt = "text" if ctype == "text/plain" else "markdown"
        links = [u for u in page.links if self._discovery.in_scope(u)]
        if page.noindex:
            return outcome("excluded", "marked noindex", links=links)
        if not page.text.strip():
            reason = "no text in the page's main content"
            return outcome("malformed", reason, entry=prev, links=links)
        now = datetime.now(UTC)
        title = page.title or title_from_url(final)
        same = prev is not None and (prev["title"], prev["text"], prev["format"]) == (
            title,
            page.text,
            fmt,
        )
        modified = (
            _parse_time(lastmod)
            or http_time(resp.headers.get("last-modified"))
            or (datetime.fromisoformat(prev["modified"]) if same and prev else now)
        )
        entry = {
            "title": title,
            "text": page.text,
            "format": fmt,
            "modified": modified.isoformat(),
            "changed_at": prev["changed_at"] if same and prev else now.isoformat(),
            "etag": resp.headers.get("etag"),
            "last_modified": resp.headers.get("last-modified"),
            "lastmod": lastmod,
            "redirected_from": redirects,
        }
        if self.config.start_urls:
            entry["links"] = links  # a later 304 or failure still knows where this page led
        return outcome("page", entry=entry, links=links)


def _parse_time(value: str | None) -> datetime | None:
    """A W3C datetime (sitemap ``lastmod``: a date, or a date and time)."""
    if not value:
        return None
    try:
        t = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)
