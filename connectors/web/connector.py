"""The ``web`` connector: a docs website, read from its sitemap or crawled from start URLs.

A document's id is its URL *after redirects*, so a page that moved (``/old`` now answers
``301 → /new``) is indexed once, as ``/new``, and ``/old`` is pruned: a move between two
syncs is reflected exactly. The redirect is recorded in the state file and in the document's
``redirected_from`` metadata.

Every sync walks the whole site once (``list_ids`` must know every page to prune the gone
ones), but cheaply: each page is requested with the ETag / Last-Modified it had last time
and a ``304 Not Modified`` costs no download, and with a sitemap a page whose ``lastmod``
did not change is not requested at all. For that, the connector keeps a mirror of what it
last extracted from each page in ``<data_dir>/web/<name>.json``: validators, title, text,
links, and when its text last changed. ``load_all``, ``changed_since`` and ``load(ids)``
read that mirror after the walk, so a ``304`` page can still be handed to the indexer
whenever it needs it (a first or full sync, a new embedding model, a page it has not
indexed yet). ``changed_since`` yields the pages whose
text changed at or after the given time by this connector's own observation, so a change
fetched by a run whose sync then failed is still delivered by the next run.

What a sync may delete is decided by what the site says, never by a failure:

- ``404``/``410``, a ``noindex`` page, a page no longer listed (or linked), a redirect out
  of ``allowed_prefix``, ``401``/``403`` on one page: gone, pruned from the index;
- ``5xx``, ``429``, timeouts, connection errors: retried with backoff (``Retry-After``
  honoured); a page that still fails keeps its indexed version (it stays in ``list_ids``, is
  not re-read, and is reported as a problem). A failing page's links from the last run are
  still followed, so its subtree is not lost either;
- the sitemap, ``robots.txt`` or a start URL unreachable, or ``max_consecutive_failures``
  pages failing in a row: the site is down, ``ConnectorError``, and the index is left as it
  was.
"""

from __future__ import annotations

import email.utils
import gzip
import io
import json
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, Literal
from urllib.parse import urljoin, urlsplit, urlunsplit
from urllib.robotparser import RobotFileParser
from xml.etree import ElementTree

import httpx
from bs4 import BeautifulSoup, Tag
from pydantic import Field, SecretStr, field_validator, model_validator

from connectors.base import ConnectorConfig, ConnectorError, Document, DocumentError, state_dir
from connectors.http import USER_AGENT, retry_after_seconds
from connectors.parsing import MAX_FILE_BYTES, html_to_markdown, parse_markdown

log = logging.getLogger(__name__)


# Bump when extraction changes: the mirror's texts are then re-fetched, not trusted.
EXTRACTOR_VERSION = 1
STATE_FORMAT = 1
# How long the mirror keeps a page that stopped being listed or served.
KEEP_GONE = timedelta(days=7)
MAX_REDIRECTS = 10
MAX_SITEMAP_BYTES = 50 * 1024 * 1024  # the sitemaps protocol's own limit, uncompressed
MAX_SITEMAP_FILES = 1000
MAX_SITEMAP_NESTING = 3
# Worth retrying: the server is busy, overloaded or briefly away.
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
HTML_TYPES = ("text/html", "application/xhtml+xml")
# Links to these are not pages; a crawl does not request them.
_NOT_PAGES = re.compile(
    r"\.(png|jpe?g|gif|svg|webp|ico|bmp|pdf|zip|gz|tgz|bz2|xz|tar|rar|7z|mp3|mp4|webm|mov|avi|"
    r"woff2?|ttf|otf|eot|css|js|mjs|map|json|xml|rss|atom|exe|msi|dmg|iso|deb|rpm|apk|jar)$",
    re.I,
)
# Page chrome, dropped before the main content is converted.
_CHROME_TAGS = [
    "head",
    "script",
    "style",
    "noscript",
    "template",
    "nav",
    "aside",
    "footer",
    "form",
    "iframe",
    "svg",
    "button",
    "dialog",
]
_CHROME_ROLES = ["navigation", "banner", "contentinfo", "complementary", "search", "menu"]

# Seams for the tests: the throttle and retry waits read this clock and sleep through this.
_clock: Callable[[], float] = time.monotonic
_sleep: Callable[[float], None] = time.sleep


def normalize_url(url: str, base: str | None = None) -> str | None:
    """An absolute http(s) URL in one canonical spelling, or None when it is not one.

    Lower-case scheme and host, no default port, no fragment, no user info (credentials
    never end up in a document id), and ``/`` for an empty path.
    """
    try:
        joined = urljoin(base, url.strip()) if base else url.strip()
        parts = urlsplit(joined)
        scheme = parts.scheme.lower()
        host = parts.hostname
        port = parts.port
    except ValueError:
        return None
    if scheme not in ("http", "https") or not host:
        return None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != {"http": 80, "https": 443}[scheme]:
        netloc += f":{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class WebConfig(ConnectorConfig):
    type: Literal["web"]
    sitemap_url: str | None = Field(
        default=None, description="e.g. https://docs.example.com/sitemap.xml (or a sitemap index)"
    )
    start_urls: list[str] = Field(
        default_factory=list, description="pages to crawl from, instead of a sitemap"
    )
    allowed_prefix: str | None = Field(
        default=None,
        description="only URLs starting with this are read; default: the sitemap's site, or "
        "the folder of the first start URL",
    )
    max_pages: int = Field(default=1000, ge=1, le=100_000)
    max_depth: int = Field(
        default=5, ge=0, le=100, description="link hops from a start URL (start_urls only)"
    )
    concurrency: int = Field(default=2, ge=1, le=16, description="requests in flight at once")
    delay_s: float = Field(
        default=0.25, ge=0, le=60, description="at least this long between two requests"
    )
    timeout_s: float = Field(default=20, gt=0, le=300, description="per request")
    max_retries: int = Field(
        default=3, ge=0, le=10, description="retries after a 5xx, 429, timeout or lost connection"
    )
    backoff_s: float = Field(
        default=1.0, ge=0, le=60, description="the first retry's wait; doubled each retry"
    )
    retry_max_wait_s: float = Field(
        default=60, ge=0, le=3600, description="the longest wait before one retry (Retry-After)"
    )
    max_consecutive_failures: int = Field(
        default=10,
        ge=1,
        le=10_000,
        description="pages failing in a row that mean the site is down: the sync stops",
    )
    respect_robots_txt: bool = True
    trust_lastmod: bool = Field(
        default=True,
        description="skip requesting a sitemap page whose lastmod has not changed",
    )
    headers: dict[str, SecretStr] = Field(
        default_factory=dict,
        repr=False,
        description="sent to the site's own origin only, e.g. Authorization: Bearer ${DOCS_TOKEN}",
    )

    @field_validator("sitemap_url", "allowed_prefix")
    @classmethod
    def _absolute_url(cls, v: str | None) -> str | None:
        if v is None:
            return None
        url = normalize_url(v)
        if url is None:
            raise ValueError("must be an absolute http:// or https:// URL")
        return url

    @field_validator("start_urls")
    @classmethod
    def _absolute_urls(cls, v: list[str]) -> list[str]:
        out = []
        for i, u in enumerate(v):
            url = normalize_url(u)
            if url is None:
                raise ValueError(f"item {i}: must be an absolute http:// or https:// URL")
            if url not in out:
                out.append(url)
        return out

    @field_validator("headers")
    @classmethod
    def _header_names(cls, v: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, value in v.items():
            if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
            if name.lower() in ("host", "user-agent", "if-none-match", "if-modified-since"):
                raise ValueError(f"header {name!r} is set by kbot itself")
            if re.search(r"[\r\n]", value.get_secret_value()):
                raise ValueError(f"header {name!r}: the value must be one line")
        return v

    @model_validator(mode="after")
    def _one_mode(self) -> WebConfig:
        if bool(self.sitemap_url) == bool(self.start_urls):
            raise ValueError("set either sitemap_url or start_urls (one of them, not both)")
        if self.sitemap_url and "max_depth" in self.model_fields_set:
            raise ValueError("max_depth applies to start_urls crawls only, not to a sitemap")
        if self.start_urls:
            prefix = self.scope
            outside = [u for u in self.start_urls if not u.startswith(prefix)]
            if outside:
                raise ValueError(
                    f"start URL {outside[0]} is outside allowed_prefix {prefix}; "
                    "widen allowed_prefix or fix the start URL"
                )
        return self

    @property
    def scope(self) -> str:
        """The URL prefix every page read must start with."""
        if self.allowed_prefix:
            return self.allowed_prefix
        if self.sitemap_url:
            return _origin(self.sitemap_url) + "/"
        first = urlsplit(self.start_urls[0])
        folder = first.path.rsplit("/", 1)[0] + "/"
        return urlunsplit((first.scheme, first.netloc, folder, "", ""))


# ---------------------------------------------------------------- HTML extraction


@dataclass
class Extracted:
    """What one HTML page holds for kbot."""

    title: str
    text: str  # Markdown: headings, lists, code fences, tables
    links: list[str]  # absolute, normalised, in page order, fragments dropped
    noindex: bool = False
    nofollow: bool = False


def extract_page(html: str, url: str) -> Extracted:
    """The main content of a page as Markdown, its title, and its links.

    Links are taken from the whole page (navigation is how a crawler finds pages); the
    content only from ``role=main``, ``<main>`` or ``<article>`` (else ``<body>``), without
    navigation, sidebars, footers, forms, scripts or hidden elements. The title is the
    content's first ``<h1>``, else ``<title>``.
    """
    soup = BeautifulSoup(html, "html.parser")
    noindex = nofollow = False
    for meta in soup.find_all("meta", attrs={"name": re.compile(r"^(robots|kbot)$", re.I)}):
        words = {w.strip().lower() for w in str(meta.get("content", "")).split(",")}
        noindex |= bool(words & {"noindex", "none"})
        nofollow |= bool(words & {"nofollow", "none"})
    base_tag = soup.find("base", href=True)
    base = urljoin(url, str(base_tag["href"])) if isinstance(base_tag, Tag) else url
    links: list[str] = []
    if not nofollow:
        seen: set[str] = set()
        for a in soup.find_all("a", href=True):
            href = str(a["href"]).strip()
            if href.lower().startswith(("mailto:", "javascript:", "tel:", "data:")):
                continue
            link = normalize_url(href, base)
            if link and link not in seen:
                seen.add(link)
                links.append(link)
    title_tag = soup.find("title")
    page_title = title_tag.get_text(" ", strip=True) if title_tag else ""

    root = (
        soup.find(attrs={"role": "main"}) or soup.find("main") or soup.find("article") or soup.body
    )
    if not isinstance(root, Tag):
        root = soup
    chrome = list(_CHROME_TAGS)
    if root is soup.body or root is soup:
        # Without a main element, the page's own header is chrome; inside <main> or
        # <article>, a <header> usually holds the page's title, which is content.
        chrome += ["header", "title"]
    drop = [
        *root.find_all(chrome),
        *root.find_all(attrs={"role": _CHROME_ROLES}),
        *root.find_all(attrs={"hidden": True}),
        *root.find_all(attrs={"aria-hidden": "true"}),
    ]
    for tag in drop:
        if not tag.decomposed:
            tag.decompose()
    h1 = root.find("h1")
    title = (h1.get_text(" ", strip=True) if isinstance(h1, Tag) else "") or page_title
    return Extracted(
        title=title, text=html_to_markdown(root), links=links, noindex=noindex, nofollow=nofollow
    )


def _title_from_url(url: str) -> str:
    name = PurePosixPath(urlsplit(url).path).name
    name = re.sub(r"\.(html?|php|aspx?|md|txt)$", "", name, flags=re.I)
    return re.sub(r"[-_]+", " ", name).strip() or urlsplit(url).netloc


# ---------------------------------------------------------------- HTTP


@dataclass
class _Response:
    url: str  # after redirects
    status: int
    reason: str
    headers: httpx.Headers
    body: bytes = b""
    redirects: list[str] = field(default_factory=list)  # the URLs that redirected, in order
    too_large: bool = False


class _Unreachable(Exception):
    """The request still failed after every retry (5xx, 429, timeout, connection)."""


class _LeavesScope(Exception):
    """A redirect leads out of ``allowed_prefix``."""

    def __init__(self, target: str):
        super().__init__(target)
        self.target = target


class _BadRedirect(Exception):
    """A redirect loop, too many redirects, or one without a usable Location."""


class _Throttle:
    """At most one request start per ``delay`` seconds, across all worker threads.

    The last start is kept even while ``delay`` is 0, so a ``Crawl-delay`` learnt from
    robots.txt counts from the request that fetched it.
    """

    def __init__(self, delay: float):
        self.delay = delay
        self._lock = threading.Lock()
        self._last: float | None = None

    def wait(self) -> None:
        with self._lock:
            now = _clock()
            start = now if self._last is None else max(now, self._last + self.delay)
            self._last = start
        if start > now:
            _sleep(start - now)


class _Http:
    """Throttled GETs with retries, manual redirects and the site's headers on its own origin.

    Redirects are followed by hand so that every hop is checked against ``allowed_prefix``
    and configured headers (tokens) are never sent to another origin.
    """

    def __init__(self, config: WebConfig):
        self.config = config
        self.throttle = _Throttle(config.delay_s)
        self.client = httpx.Client(
            timeout=config.timeout_s,
            limits=httpx.Limits(max_connections=config.concurrency + 1),
            headers={"User-Agent": USER_AGENT},
        )
        own = {_origin(config.scope)}
        if config.sitemap_url:
            own.add(_origin(config.sitemap_url))
        self._own_origins = own
        self._secret_headers = {k: v.get_secret_value() for k, v in config.headers.items()}

    def close(self) -> None:
        self.client.close()

    def get(
        self,
        url: str,
        *,
        conditional: dict[str, str] | None = None,
        in_scope: Callable[[str], bool] | None = None,
        max_bytes: int = MAX_FILE_BYTES,
    ) -> _Response:
        """GET with retries; raises _Unreachable, _LeavesScope or _BadRedirect."""
        c = self.config
        reason = ""
        for attempt in range(c.max_retries + 1):
            wait = min(c.backoff_s * 2**attempt, c.retry_max_wait_s)
            try:
                resp = self._follow(url, conditional or {}, in_scope, max_bytes)
            except httpx.TimeoutException:
                reason = f"timed out after {c.timeout_s:g}s"
            except httpx.TransportError as e:
                reason = f"connection failed ({type(e).__name__})"
            else:
                if resp.status not in TRANSIENT_STATUSES:
                    return resp
                reason = f"{resp.status} {resp.reason}".strip()
                asked = retry_after_seconds(resp.headers.get("retry-after"))
                if asked is not None:
                    wait = min(asked, c.retry_max_wait_s)
            if attempt < c.max_retries:
                log.debug("%s: %s; retry %d in %.2fs", url, reason, attempt + 1, wait)
                _sleep(wait)
        tries = c.max_retries + 1
        raise _Unreachable(f"{reason} ({tries} {'try' if tries == 1 else 'tries'})")

    def _follow(
        self,
        url: str,
        conditional: dict[str, str],
        in_scope: Callable[[str], bool] | None,
        max_bytes: int,
    ) -> _Response:
        hops: list[str] = []
        current = url
        while True:
            headers = dict(conditional)
            if _origin(current) in self._own_origins:
                headers.update(self._secret_headers)
            self.throttle.wait()
            request = self.client.build_request("GET", current, headers=headers)
            resp = self.client.send(request, stream=True, follow_redirects=False)
            try:
                if resp.status_code in REDIRECT_STATUSES:
                    target = normalize_url(resp.headers.get("location", ""), current)
                    hops.append(current)
                    if target is None:
                        raise _BadRedirect(f"{resp.status_code} redirect without a usable Location")
                    if target in hops:
                        raise _BadRedirect(f"redirect loop through {target}")
                    if len(hops) > MAX_REDIRECTS:
                        raise _BadRedirect(f"more than {MAX_REDIRECTS} redirects")
                    if in_scope is not None and not in_scope(target):
                        raise _LeavesScope(target)
                    current = target
                    continue
                out = _Response(
                    url=current,
                    status=resp.status_code,
                    reason=resp.reason_phrase,
                    headers=resp.headers,
                    redirects=hops,
                )
                if resp.status_code == 200:
                    out.body, out.too_large = _read_capped(resp, max_bytes)
                return out
            finally:
                resp.close()


def _read_capped(resp: httpx.Response, limit: int) -> tuple[bytes, bool]:
    buf = bytearray()
    for part in resp.iter_bytes():
        buf += part
        if len(buf) > limit:
            return b"", True
    return bytes(buf), False


# ---------------------------------------------------------------- the walk


@dataclass
class _Outcome:
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
        self._robots: dict[str, RobotFileParser | None] = {}
        self._robots_lock = threading.Lock()
        self._http: _Http | None = None

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

    def _record(self, o: _Outcome) -> Document | None:
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
        """Save the mirror: validators and texts of every page that exists now, and for
        ``KEEP_GONE`` of the pages that disappeared, so a sitemap that lists too little for
        a run (a broken deploy the mass-deletion guard refused) costs no re-download."""
        self._done = True
        pages = {k: v for k, v in self._pages.items() if k in self._live}
        for entry in pages.values():
            entry.pop("gone_at", None)
        now = datetime.now(UTC)
        for k, v in self._prev_pages.items():
            if k in pages:
                continue
            gone_at = datetime.fromisoformat(v.get("gone_at") or now.isoformat())
            if now - gone_at < KEEP_GONE:
                pages[k] = {**v, "gone_at": gone_at.isoformat()}
        aliases = {k: v for k, v in self._aliases.items() if v in pages}
        state = {
            "format": STATE_FORMAT,
            "extractor": EXTRACTOR_VERSION,
            "pages": pages,
            "aliases": aliases,
        }
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state), encoding="utf-8")
        os.replace(tmp, self.state_path)

    def _load_state(self) -> None:
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            log.warning("%s: ignoring unreadable state %s (%s)", self._label, self.state_path, e)
            return
        ok = (
            isinstance(state, dict)
            and state.get("format") == STATE_FORMAT
            and state.get("extractor") == EXTRACTOR_VERSION
        )
        if ok:
            self._prev_pages = state.get("pages") or {}
            self._prev_aliases = state.get("aliases") or {}

    # -- the walk

    def _walk(self) -> Iterator[_Outcome]:
        """Every URL's outcome, in a stable order; raises ConnectorError when the site is down."""
        self._load_state()
        self._http = _Http(self.config)
        try:
            if self.config.sitemap_url:
                yield from self._walk_sitemap(self.config.sitemap_url)
            else:
                yield from self._crawl()
        finally:
            self._http.close()

    def _walk_sitemap(self, sitemap_url: str) -> Iterator[_Outcome]:
        c = self.config
        listed: dict[str, str | None] = {}
        outside = 0
        for url, lastmod in self._read_sitemaps(sitemap_url):
            if not self._in_scope(url):
                outside += 1
            elif url not in listed:
                listed[url] = lastmod
        if outside:
            log.warning(
                "%s: %d sitemap URL(s) outside %s were ignored", self._label, outside, c.scope
            )
        targets = [u for u in listed if self._allowed(u)]
        if len(targets) < len(listed):
            log.info(
                "%s: robots.txt disallows %d listed URL(s)", self._label, len(listed) - len(targets)
            )
        if len(targets) > c.max_pages:
            log.warning(
                "%s: the sitemap lists %d pages; only the first %d (max_pages) are read",
                self._label,
                len(targets),
                c.max_pages,
            )
            targets = targets[: c.max_pages]
        yield from self._visit_all([(u, listed[u], 0) for u in targets])

    def _crawl(self) -> Iterator[_Outcome]:
        c = self.config
        starts = c.start_urls
        frontier: list[str] = []
        for u in starts:
            if self._allowed(u):
                frontier.append(u)
            else:
                raise ConnectorError(f"{self._label}: robots.txt disallows the start URL {u}")
        seen = set(frontier)
        visited = 0
        depth = 0
        while frontier:
            room = c.max_pages - visited
            if len(frontier) > room:
                log.warning(
                    "%s: max_pages (%d) reached; %d linked page(s) not read",
                    self._label,
                    c.max_pages,
                    len(frontier) - room,
                )
                frontier = frontier[:room]
            visited += len(frontier)
            following: list[str] = []
            for o in self._visit_all([(u, None, depth) for u in frontier]):
                if depth == 0:
                    self._check_start(o)
                seen.add(o.id)
                yield o
                if depth >= c.max_depth:
                    continue
                for link in o.links:
                    if link not in seen and self._followable(link):
                        seen.add(link)
                        following.append(link)
            frontier = following
            depth += 1

    def _check_start(self, o: _Outcome) -> None:
        if o.kind == "failed":
            raise ConnectorError(
                f"{self._label}: start URL {o.requested} is unreachable: {o.reason}. "
                "The site may be down; the index was left as it was."
            )
        if o.status in (401, 403):
            raise ConnectorError(self._refused(f"start URL {o.requested}", o.reason))
        if o.kind == "excluded" and o.links:
            return  # a noindex listing page: not indexed, but its links are followed
        if o.kind in ("gone", "removed", "excluded"):
            raise ConnectorError(
                f"{self._label}: start URL {o.requested} cannot be read: {o.reason}. "
                "Fix start_urls; the index was left as it was."
            )

    def _refused(self, what: str, answer: str) -> str:
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
        return f"{self._label}: {what} answered {answer}: {advice}. The index was left as it was."

    def _visit_all(self, targets: list[tuple[str, str | None, int]]) -> Iterator[_Outcome]:
        """Visit URLs with ``concurrency`` workers, yielding outcomes in the given order.

        Only a window of requests is in flight, so a consumer that stops (a site found down,
        a caller that wanted one page) leaves no backlog of queued requests behind.
        """
        c = self.config
        failures = 0
        todo = deque(targets)
        pending: deque[Future[_Outcome]] = deque()
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

    def _visit(self, url: str, lastmod: str | None, depth: int) -> _Outcome:
        """Request one page (conditionally when it was read before) and classify the answer."""
        assert self._http is not None
        known_id = self._prev_aliases.get(url, url)
        aliased = [url] if known_id != url else []  # keeps the alias when nothing is learnt
        prev = self._prev_pages.get(known_id)
        if (
            prev is not None
            and lastmod is not None
            and self.config.trust_lastmod
            and prev.get("lastmod") == lastmod
        ):
            return _Outcome(
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
            resp = self._http.get(url, conditional=conditional, in_scope=self._in_scope)
            if resp.status == 304 and resp.url != known_id:
                # Validators of another resource matched; ask again without them.
                prev = None
                resp = self._http.get(url, in_scope=self._in_scope)
        except _Unreachable as e:
            reason = f"unreachable: {e}"
            links = list(prev.get("links", [])) if prev else []
            return _Outcome(
                "failed", url, known_id, reason, prev, links, redirects=aliased, depth=depth
            )
        except _LeavesScope as e:
            reason = f"redirects to {e.target}, outside allowed_prefix"
            return _Outcome("removed", url, url, reason, depth=depth)
        except _BadRedirect as e:
            return _Outcome("removed", url, url, str(e), depth=depth)
        except (httpx.HTTPError, httpx.InvalidURL) as e:
            reason = f"cannot be read ({type(e).__name__})"
            return _Outcome(
                "malformed", url, known_id, reason, prev, redirects=aliased, depth=depth
            )
        return self._classify(url, lastmod, depth, resp, prev)

    def _classify(
        self,
        url: str,
        lastmod: str | None,
        depth: int,
        resp: _Response,
        prev: dict[str, Any] | None,
    ) -> _Outcome:
        final = resp.url
        redirects = resp.redirects
        if final != self._prev_aliases.get(url, url):
            prev = None  # the old entry is another URL's: nothing to compare or keep

        def outcome(kind: str, reason: str = "", **kw: Any) -> _Outcome:
            return _Outcome(
                kind, url, final, reason, redirects=redirects, depth=depth, status=resp.status, **kw
            )

        if final != url and not self._allowed(final):
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
            text = _decode(resp)
        except ValueError as e:
            return outcome("malformed", str(e), entry=prev)
        try:
            if ctype in HTML_TYPES:
                page = extract_page(text, final)
            elif ctype in ("text/markdown", "text/x-markdown"):
                parsed = parse_markdown(text.replace("\r\n", "\n"), _title_from_url(final))
                page = Extracted(parsed.title, parsed.text, [])
            elif ctype == "text/plain":
                page = Extracted(_title_from_url(final), text.strip(), [])
            else:
                return outcome("excluded", f"not a page (Content-Type {ctype})")
        except RecursionError:
            return outcome("malformed", "markup is nested too deeply to read", entry=prev)
        fmt = "text" if ctype == "text/plain" else "markdown"
        links = [u for u in page.links if self._in_scope(u)]
        if page.noindex:
            return outcome("excluded", "marked noindex", links=links)
        if not page.text.strip():
            reason = "no text in the page's main content"
            return outcome("malformed", reason, entry=prev, links=links)
        now = datetime.now(UTC)
        title = page.title or _title_from_url(final)
        same = prev is not None and (prev["title"], prev["text"], prev["format"]) == (
            title,
            page.text,
            fmt,
        )
        modified = (
            _parse_time(lastmod)
            or _http_time(resp.headers.get("last-modified"))
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

    # -- scope and robots.txt

    def _in_scope(self, url: str) -> bool:
        return url.startswith(self.config.scope)

    def _followable(self, url: str) -> bool:
        path = urlsplit(url).path
        return self._in_scope(url) and not _NOT_PAGES.search(path) and self._allowed(url)

    def _allowed(self, url: str) -> bool:
        if not self.config.respect_robots_txt:
            return True
        origin = _origin(url)
        with self._robots_lock:  # workers check redirect targets too
            if origin not in self._robots:
                self._robots[origin] = self._read_robots(origin)
            rules = self._robots[origin]
        return rules is None or rules.can_fetch(USER_AGENT, url)

    def _read_robots(self, origin: str) -> RobotFileParser | None:
        """The site's robots.txt; None (everything allowed) when it has none (4xx).

        Unreachable (5xx, timeouts) means the site is down, as RFC 9309 treats it: the
        crawl does not start rather than guess.
        """
        assert self._http is not None
        url = origin + "/robots.txt"
        try:
            resp = self._http.get(url, max_bytes=512 * 1024)
        except (_Unreachable, _BadRedirect, httpx.HTTPError) as e:
            raise ConnectorError(
                f"{self._label}: {url} is unreachable: {e}. The site may be down; "
                "the index was left as it was."
            ) from None
        if resp.status >= 500:
            raise ConnectorError(
                f"{self._label}: {url} answered {resp.status} {resp.reason}. The site may be "
                "down; the index was left as it was."
            )
        if resp.status != 200 or resp.too_large:
            return None
        rules = RobotFileParser(url)
        rules.parse(resp.body.decode("utf-8", errors="replace").splitlines())
        delay = rules.crawl_delay(USER_AGENT)
        if delay is not None and float(delay) > self._http.throttle.delay:
            log.info("%s: robots.txt asks for %ss between requests", self._label, delay)
            self._http.throttle.delay = float(delay)
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
                    f"{self._label}: more than {MAX_SITEMAP_FILES} sitemap files under {url}"
                )
            kind, entries = self._read_sitemap(current)
            if kind == "sitemapindex":
                if level >= MAX_SITEMAP_NESTING:
                    raise ConnectorError(
                        f"{self._label}: sitemap indexes nested over {MAX_SITEMAP_NESTING} deep "
                        f"at {current}"
                    )
                queue.extend((loc, level + 1) for loc, _ in entries)
            else:
                yield from entries

    def _read_sitemap(self, url: str) -> tuple[str, list[tuple[str, str | None]]]:
        assert self._http is not None
        where = f"{self._label}: sitemap {url}"
        try:
            resp = self._http.get(url, max_bytes=MAX_SITEMAP_BYTES)
        except _Unreachable as e:
            raise ConnectorError(
                f"{where} is unreachable: {e}. The site may be down; the index was left as it was."
            ) from None
        except (_BadRedirect, httpx.HTTPError) as e:
            raise ConnectorError(f"{where} cannot be read: {e}") from None
        if resp.status in (401, 403):
            raise ConnectorError(self._refused(f"sitemap {url}", f"{resp.status} {resp.reason}"))
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


def _decode(resp: _Response) -> str:
    """The body as text, by the charset of Content-Type or a <meta charset>, else UTF-8."""
    raw = resp.body
    if b"\0" in raw[:8192]:
        raise ValueError("looks like a binary file (contains NUL bytes)")
    m = re.search(r"charset=[\"']?([\w.:-]+)", resp.headers.get("content-type", ""), re.I)
    if m is None:
        m = re.search(rb"<meta[^>]+charset=[\"']?([\w.:-]+)", raw[:2048], re.I)
    charset = m.group(1) if m else "utf-8"
    if isinstance(charset, bytes):
        charset = charset.decode("ascii")
    try:
        return raw.decode(charset)
    except LookupError:
        raise ValueError(f"unknown charset {charset!r}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"not valid {charset} text (byte {e.start})") from None


def _parse_time(value: str | None) -> datetime | None:
    """A W3C datetime (sitemap ``lastmod``: a date, or a date and time)."""
    if not value:
        return None
    try:
        t = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _http_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        t = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)
