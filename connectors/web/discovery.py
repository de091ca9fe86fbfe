"""Which URLs a sync visits: the pages a sitemap lists (following sitemap indexes), or a
crawl from start URLs along their links; always inside ``allowed_prefix`` and as the site's
robots.txt allows (its ``Crawl-delay`` included)."""

from __future__ import annotations

import gzip
import io
import logging
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit
from urllib.robotparser import RobotFileParser
from xml.etree import ElementTree

import httpx

from connectors.base import ConnectorError
from connectors.http import USER_AGENT
from connectors.web.config import WebConfig
from connectors.web.fetching import BadRedirect, Http, Unreachable
from connectors.web.urls import NOT_PAGES, normalize_url, origin

log = logging.getLogger(__name__)

MAX_SITEMAP_BYTES = 50 * 1024 * 1024  # the sitemaps protocol's own limit, uncompressed
MAX_SITEMAP_FILES = 1000
MAX_SITEMAP_NESTING = 3


@dataclass
class Outcome:
    """What visiting one URL found. ``kind`` is one of:

    ``page`` (new content), ``not_modified`` (304 or an unchanged sitemap lastmod),
    ``failed`` (still unreachable: keep the old version), ``malformed`` (skipped, old version
    kept), ``gone`` (404/410), ``removed`` (reported, then pruned), ``excluded`` (not a page
    for kbot: pruned quietly).
    """

    kind: str
    requested: str
    id: str  # the final URL (for failed: the URL it led to last time)
    reason: str = ""
    entry: dict[str, Any] | None = None  # the mirror entry after this visit
    links: list[str] = field(default_factory=list)
    redirects: list[str] = field(default_factory=list)
    depth: int = 0
    status: int | None = None  # the final answer's HTTP status, when there was one


# Visits (url, sitemap lastmod, depth) targets and yields their outcomes in the same order.
VisitAll = Callable[[list[tuple[str, str | None, int]]], Iterator[Outcome]]


class Discovery:
    """Scope, robots.txt and the two ways of finding pages, for one sync run."""

    def __init__(self, config: WebConfig, http: Http, label: str):
        self.config = config
        self.http = http
        self.label = label
        self._robots: dict[str, RobotFileParser | None] = {}
        self._robots_lock = threading.Lock()

    def sitemap(self, sitemap_url: str, visit_all: VisitAll) -> Iterator[Outcome]:
        """Visit every page the sitemap lists, in scope and allowed, up to ``max_pages``."""
        c = self.config
        listed: dict[str, str | None] = {}
        outside = 0
        for url, lastmod in self._read_sitemaps(sitemap_url):
            if not self.in_scope(url):
                outside += 1
            elif url not in listed:
                listed[url] = lastmod
        if outside:
            log.warning(
                "%s: %d sitemap URL(s) outside %s were ignored", self.label, outside, c.scope
            )
        targets = [u for u in listed if self.allowed(u)]
        if len(targets) < len(listed):
            log.info(
                "%s: robots.txt disallows %d listed URL(s)", self.label, len(listed) - len(targets)
            )
        if len(targets) > c.max_pages:
            log.warning(
                "%s: the sitemap lists %d pages; only the first %d (max_pages) are read",
                self.label,
                len(targets),
                c.max_pages,
            )
            targets = targets[: c.max_pages]
        yield from visit_all([(u, listed[u], 0) for u in targets])

    def crawl(self, visit_all: VisitAll) -> Iterator[Outcome]:
        """Visit the start URLs, then the pages they link to, breadth first, up to
        ``max_depth`` hops and ``max_pages`` pages."""
        c = self.config
        starts = c.start_urls
        frontier: list[str] = []
        for u in starts:
            if self.allowed(u):
                frontier.append(u)
            else:
                raise ConnectorError(f"{self.label}: robots.txt disallows the start URL {u}")
        seen = set(frontier)
        visited = 0
        depth = 0
        while frontier:
            room = c.max_pages - visited
            if len(frontier) > room:
                log.warning(
                    "%s: max_pages (%d) reached; %d linked page(s) not read",
                    self.label,
                    c.max_pages,
                    len(frontier) - room,
                )
                frontier = frontier[:room]
            visited += len(frontier)
            following: list[str] = []
            for o in visit_all([(u, None, depth) for u in frontier]):
                if depth == 0:
                    self._check_start(o)
                seen.add(o.id)
                yield o
                if depth >= c.max_depth:
                    continue
                for link in o.links:
                    if link not in seen and self.followable(link):
                        seen.add(link)
                        following.append(link)
            frontier = following
            depth += 1

    def _check_start(self, o: Outcome) -> None:
        if o.kind == "failed":
            raise ConnectorError(
                f"{self.label}: start URL {o.requested} is unreachable: {o.reason}. "
                "The site may be down; the index was left as it was."
            )
        if o.status in (401, 403):
            raise ConnectorError(self.refused(f"start URL {o.requested}", o.reason))
        if o.kind == "excluded" and o.links:
            return  # a noindex listing page: not indexed, but its links are followed
        if o.kind in ("gone", "removed", "excluded"):
            raise ConnectorError(
                f"{self.label}: start URL {o.requested} cannot be read: {o.reason}. "
                "Fix start_urls; the index was left as it was."
            )

    def refused(self, what: str, answer: str) -> str:
        """The message for a 401/403 where the site as a whole is read."""
        if self.config.headers:
            advice = (
                "the site refused kbot's credentials. Check the connector's `headers` and "
                "that the token they carry is valid"
            )
        else:
            advice = (
                "the site needs credentials. Set the connector's `headers`, e.g. "
                "Authorization: Bearer ${DOCS_TOKEN}"
            )
        return f"{self.label}: {what} answered {answer}: {advice}. The index was left as it was."

    def in_scope(self, url: str) -> bool:
        return url.startswith(self.config.scope)

    def followable(self, url: str) -> bool:
        path = urlsplit(url).path
        return self.in_scope(url) and not NOT_PAGES.search(path) and self.allowed(url)

    def allowed(self, url: str) -> bool:
        if not self.config.respect_robots_txt:
            return True
        site = origin(url)
        with self._robots_lock:  # workers check redirect targets too
            if site not in self._robots:
                self._robots[site] = self._read_robots(site)
            rules = self._robots[site]
        return rules is None or rules.can_fetch(USER_AGENT, url)

    def _read_robots(self, origin: str) -> RobotFileParser | None:
        """The site's robots.txt; None (everything allowed) when it has none (4xx).

        Unreachable (5xx, timeouts) means the site is down, as RFC 9309 treats it: the
        crawl does not start rather than guess.
        """
        url = origin + "/robots.txt"
        try:
            resp = self.http.get(url, max_bytes=512 * 1024)
        except (Unreachable, BadRedirect, httpx.HTTPError) as e:
            raise ConnectorError(
                f"{self.label}: {url} is unreachable: {e}. The site may be down; "
                "the index was left as it was."
            ) from None
        if resp.status >= 500:
            raise ConnectorError(
                f"{self.label}: {url} answered {resp.status} {resp.reason}. The site may be "
                "down; the index was left as it was."
            )
        if resp.status != 200 or resp.too_large:
            return None
        rules = RobotFileParser(url)
        rules.parse(resp.body.decode("utf-8", errors="replace").splitlines())
        delay = rules.crawl_delay(USER_AGENT)
        if delay is not None and float(delay) > self.http.throttle.delay:
            log.info("%s: robots.txt asks for %ss between requests", self.label, delay)
            self.http.throttle.delay = float(delay)
        return rules

    # -- sitemaps

    def _read_sitemaps(self, url: str) -> Iterator[tuple[str, str | None]]:
        """``(url, lastmod)`` of every page in a sitemap, following sitemap index files."""
        queue: deque[tuple[str, int]] = deque([(url, 0)])
        read: set[str] = set()
        while queue:
            current, level = queue.popleft()
            if current in read:
                continue
            read.add(current)
            if len(read) > MAX_SITEMAP_FILES:
                raise ConnectorError(
                    f"{self.label}: more than {MAX_SITEMAP_FILES} sitemap files under {url}"
                )
            kind, entries = self._read_sitemap(current)
            if kind == "sitemapindex":
                if level >= MAX_SITEMAP_NESTING:
                    raise ConnectorError(
                        f"{self.label}: sitemap indexes nested over {MAX_SITEMAP_NESTING} deep "
                        f"at {current}"
                    )
                queue.extend((loc, level + 1) for loc, _ in entries)
            else:
                yield from entries

    def _read_sitemap(self, url: str) -> tuple[str, list[tuple[str, str | None]]]:
        where = f"{self.label}: sitemap {url}"
        try:
            resp = self.http.get(url, max_bytes=MAX_SITEMAP_BYTES)
        except Unreachable as e:
            raise ConnectorError(
                f"{where} is unreachable: {e}. The site may be down; the index was left as it was."
            ) from None
        except (BadRedirect, httpx.HTTPError) as e:
            raise ConnectorError(f"{where} cannot be read: {e}") from None
        if resp.status in (401, 403):
            raise ConnectorError(self.refused(f"sitemap {url}", f"{resp.status} {resp.reason}"))
        if resp.status != 200:
            raise ConnectorError(
                f"{where} answered {resp.status} {resp.reason}; the index was left as it was"
            )
        if resp.too_large:
            raise ConnectorError(f"{where} is over {MAX_SITEMAP_BYTES} bytes")
        try:
            return parse_sitemap(resp.body, base=resp.url)
        except ValueError as e:
            raise ConnectorError(f"{where}: {e}") from None


def parse_sitemap(raw: bytes, base: str) -> tuple[str, list[tuple[str, str | None]]]:
    """``("urlset" | "sitemapindex", [(loc, lastmod), ...])`` from a sitemap file (or .gz)."""
    if raw[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as gz:
                raw = gz.read(MAX_SITEMAP_BYTES + 1)
        except (OSError, EOFError) as e:
            raise ValueError(f"not a valid gzip file ({e})") from None
        if len(raw) > MAX_SITEMAP_BYTES:
            raise ValueError(f"over {MAX_SITEMAP_BYTES} bytes uncompressed")
    # Sitemaps never declare a DTD; refusing one rules out entity-expansion bombs.
    if re.search(rb"<!(DOCTYPE|ENTITY)", raw[:4096], re.I):
        raise ValueError("declares a DTD, which a sitemap never does; refused")
    try:
        root = ElementTree.fromstring(raw)
    except ElementTree.ParseError as e:
        raise ValueError(f"not valid XML ({e})") from None
    kind = _local(root.tag)
    if kind not in ("urlset", "sitemapindex"):
        raise ValueError(f"not a sitemap (root element <{kind}>, expected <urlset>)")
    entries: list[tuple[str, str | None]] = []
    for item in root:
        fields = {_local(child.tag): (child.text or "").strip() for child in item}
        loc = normalize_url(fields.get("loc", ""), base)
        if loc:
            lastmod = fields.get("lastmod") or None
            entries.append((loc, lastmod))
    return kind, entries


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]
