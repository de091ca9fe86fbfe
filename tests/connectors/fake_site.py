"""A small docs website on 127.0.0.1 for the web connector's tests.

It serves real HTML pages, ``robots.txt`` and ``sitemap.xml`` (or a sitemap index over several
child sitemaps) over real HTTP, answers conditional requests (``If-None-Match`` /
``If-Modified-Since``) with ``304`` as a real server does, and can be told to misbehave per
path: ``404``/``410``, redirects, ``5xx`` a number of times, ``429`` with ``Retry-After``,
hanging until the client times out, or requiring an ``Authorization`` header. Every request is
logged with its headers and the status it got, so tests can assert what went over the wire.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler
from xml.sax.saxutils import escape

from tests.fake_http import QuietHTTPServer

HANG_LIMIT_S = 10  # a hanging response gives up after this, in case a test forgets


@dataclass
class Page:
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    last_modified: datetime | None = None
    etag: bool = True
    lastmod: str | None = None  # the sitemap's <lastmod>, when listed

    @property
    def tag(self) -> str:
        return '"' + hashlib.sha1(self.body).hexdigest()[:16] + '"'


@dataclass
class Hit:
    """One request the site received."""

    path: str
    headers: dict[str, str]
    status: int


def html(title: str, body: str, *, nav: str = "", head: str = "") -> str:
    """A page laid out like a real docs site: header, navigation, main content, footer."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title} | Acme Docs</title>
<script>window.analytics = "tracking";</script><style>body {{ color: red }}</style>{head}</head>
<body>
<header class="site-header"><a href="/">Acme Docs</a> <span>Site banner text</span></header>
<nav class="sidebar"><ul><li><a href="/docs/">Home</a></li>{nav}</ul></nav>
<main>
{body}
</main>
<aside class="toc">On this page: table of contents</aside>
<footer>Copyright Acme Corp. Footer text.</footer>
</body></html>"""


class FakeSite:
    """The site's content and behaviours; change them between syncs."""

    def __init__(self) -> None:
        self.pages: dict[str, Page] = {}
        self.robots: str | None = "User-agent: *\nAllow: /\n"
        self.robots_status = 200
        # None: /sitemap.xml lists every page. A list: exactly these paths, in this order.
        self.listed: list[str] | None = None
        self.sitemap_parts = 1  # >1: /sitemap.xml is an index over that many child sitemaps
        self.sitemap_status = 200
        self.sitemap_body: bytes | None = None  # served verbatim instead of the generated one
        self.redirects: dict[str, tuple[int, str]] = {}
        self.statuses: dict[str, int] = {}  # a fixed status for a path (404, 410, 500, ...)
        self.failures: dict[str, list[int]] = {}  # statuses to answer, one per request, first
        self.rate_limits: dict[str, list[str]] = {}  # Retry-After values, one 429 per request
        self.hanging: set[str] = set()
        self.auth: str | None = None  # the Authorization value every request must carry
        self.down = False  # every path answers 503
        self.hits: list[Hit] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.barrier: threading.Barrier | None = None  # page requests wait here when set
        self._release = threading.Event()
        self._lock = threading.Lock()
        self.base = ""

    # -- content

    def page(
        self,
        path: str,
        title: str,
        body: str,
        *,
        nav: str = "",
        head: str = "",
        last_modified: datetime | None = None,
        lastmod: str | None = None,
        etag: bool = True,
    ) -> None:
        self.raw(
            path,
            html(title, body, nav=nav, head=head).encode(),
            last_modified=last_modified,
            lastmod=lastmod,
            etag=etag,
        )

    def raw(
        self,
        path: str,
        body: bytes,
        content_type: str = "text/html; charset=utf-8",
        *,
        last_modified: datetime | None = None,
        lastmod: str | None = None,
        etag: bool = True,
    ) -> None:
        self.pages[path] = Page(body, content_type, last_modified, etag, lastmod)

    def url(self, path: str) -> str:
        return self.base + path

    def requests_for(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path]

    def release(self) -> None:
        """Let every hanging response finish."""
        self._release.set()

    # -- responses

    def sitemap_xml(self, part: int | None = None) -> bytes:
        paths = self.listed if self.listed is not None else sorted(self.pages)
        if part is not None:
            paths = paths[part - 1 :: self.sitemap_parts]
        urls = []
        for p in paths:
            page = self.pages.get(p)
            lastmod = f"<lastmod>{page.lastmod}</lastmod>" if page and page.lastmod else ""
            urls.append(f"<url><loc>{escape(self.url(p))}</loc>{lastmod}</url>")
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
            + "\n".join(urls)
            + "\n</urlset>\n"
        ).encode()

    def sitemap_index_xml(self) -> bytes:
        items = "".join(
            f"<sitemap><loc>{self.url(f'/sitemap-{i}.xml')}</loc></sitemap>"
            for i in range(1, self.sitemap_parts + 1)
        )
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
            f"{items}</sitemapindex>\n"
        ).encode()

    def respond(self, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body for one GET."""
        if self.auth is not None and headers.get("authorization") != self.auth:
            return 401, {"WWW-Authenticate": 'Bearer realm="docs"'}, b"unauthorized"
        if self.down:
            return 503, {}, b"down for maintenance"
        with self._lock:
            queued = self.failures.get(path)
            fail = queued.pop(0) if queued else None
            waits = self.rate_limits.get(path)
            retry_after = waits.pop(0) if waits else None
        if fail is not None:
            return fail, {}, b"server error"
        if retry_after is not None:
            return 429, {"Retry-After": retry_after}, b"slow down"
        if path in self.hanging:
            self._release.wait(HANG_LIMIT_S)
            return 504, {}, b"gave up"
        if path in self.statuses:
            return self.statuses[path], {}, b"status"
        if path in self.redirects:
            code, target = self.redirects[path]
            location = target if "://" in target else self.url(target)
            return code, {"Location": location}, b""
        if path == "/robots.txt":
            if self.robots is None:
                return 404, {}, b"not found"
            return self.robots_status, {"Content-Type": "text/plain"}, self.robots.encode()
        if path == "/sitemap.xml":
            if self.sitemap_status != 200:
                return self.sitemap_status, {}, b"sitemap error"
            if self.sitemap_body is not None:
                body = self.sitemap_body
            elif self.sitemap_parts > 1:
                body = self.sitemap_index_xml()
            else:
                body = self.sitemap_xml()
            return 200, {"Content-Type": "application/xml"}, body
        if path.startswith("/sitemap-") and path.endswith(".xml"):
            part = int(path.removeprefix("/sitemap-").removesuffix(".xml"))
            return 200, {"Content-Type": "application/xml"}, self.sitemap_xml(part)
        page = self.pages.get(path)
        if page is None:
            return 404, {"Content-Type": "text/html"}, b"<h1>Not found</h1>"
        if self.barrier is not None:
            try:
                self.barrier.wait(timeout=HANG_LIMIT_S)
            except threading.BrokenBarrierError:
                return 500, {}, b"not enough concurrent requests reached the barrier"
        out = {"Content-Type": page.content_type}
        if page.etag:
            out["ETag"] = page.tag
        if page.last_modified:
            out["Last-Modified"] = format_datetime(page.last_modified, usegmt=True)
        if page.etag and headers.get("if-none-match") == page.tag:
            return 304, out, b""
        since = headers.get("if-modified-since")
        if (
            "if-none-match" not in headers
            and since
            and page.last_modified
            and page.last_modified <= parsedate_to_datetime(since)
        ):
            return 304, out, b""
        return 200, out, page.body


@contextmanager
def serve(site: FakeSite) -> Iterator[FakeSite]:
    """Serve ``site`` on 127.0.0.1 with a free port until the block ends."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            headers = {k.lower(): v for k, v in self.headers.items()}
            path = self.path.split("?", 1)[0]
            with site._lock:
                site.in_flight += 1
                site.max_in_flight = max(site.max_in_flight, site.in_flight)
            try:
                status, extra, body = site.respond(path, headers)
            finally:
                with site._lock:
                    site.in_flight -= 1
            with site._lock:
                site.hits.append(Hit(path, headers, status))
            try:
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if status != 304:
                    self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client timed out and left

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = QuietHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    site.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield site
    finally:
        site.release()
        server.shutdown()
        server.server_close()
        thread.join()


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)
