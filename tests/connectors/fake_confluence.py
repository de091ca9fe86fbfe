"""A local stand-in for Confluence's REST API (v1, ``/rest/api``), Cloud or Data Center flavour.

It answers the requests kbot's connector makes with JSON shaped as Confluence documents it:
``GET /rest/api/space/{key}``, ``GET /rest/api/content?spaceKey=...`` and
``GET /rest/api/content/search?cql=...``, with ``expand`` (``body.storage``, ``version``,
``ancestors``, ``space``), ``results``/``start``/``limit``/``size`` envelopes and
``_links.next`` pagination (an opaque ``cursor`` for Cloud's CQL search, ``start``
elsewhere). The server caps ``limit`` as the real one does, so clients must follow ``next``.

- Cloud lives below ``/wiki`` and takes Basic auth with email and API token; Data Center
  lives at the root and takes a personal access token as a Bearer token.
- Errors use Confluence's JSON error shape; 401, 403, 429 (with Retry-After) and 5xx can be
  scripted, as can requests that never get an answer in time.
- Its CQL understands the clauses the connector sends (``type``, ``space``, ``label``,
  ``lastmodified``, ``id``) and answers 400 to anything else. Dates are read as UTC (real
  Confluence reads them in the user's timezone, which is why the connector leaves a margin).
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote_plus, urlencode, urlsplit

from tests.fake_http import QuietHTTPServer

CLOUD_EMAIL = "kbot-bot@acme.example"
CLOUD_API_TOKEN = "ATATT3xFfGF0-test-cloud-api-token-5d1e"
DC_TOKEN = "NjQ5MjM0OTgzNzE2-test-data-center-pat-Aq9"
# Pages are dated here unless a test says otherwise: long before any sync the tests run.
OLD = datetime(2024, 1, 10, 9, 30, tzinfo=UTC)
# Data Center answers dates in its server's timezone.
DC_TZ = timezone(timedelta(hours=2))
# How long a held request waits for the test to release it before answering anyway.
HOLD_LIMIT_S = 10.0


@dataclass
class Page:
    id: str
    space: str
    title: str
    body: str  # storage format (XHTML)
    parent: str | None = None
    labels: set[str] = field(default_factory=set)
    version: int = 1
    when: datetime = OLD
    # Top-level keys replaced in the page's JSON (None deletes the key): a malformed page.
    override: dict[str, Any] | None = None


@dataclass
class Fault:
    status: int = 503
    retry_after: str | None = None
    hang: bool = False  # never answer in time (the client times out)
    path: str | None = None  # only requests whose path contains this
    cql: str | None = None  # only CQL searches whose query contains this
    times: int = 1


@dataclass
class Request:
    path: str
    query: dict[str, str]
    headers: dict[str, str]


class FakeConfluence:
    def __init__(self, flavor: str = "cloud", max_limit: int = 25):
        assert flavor in ("cloud", "dc")
        self.flavor = flavor
        self.context = "/wiki" if flavor == "cloud" else ""
        self.max_limit = max_limit
        self.spaces: dict[str, str] = {}
        self.pages: dict[str, Page] = {}
        self.requests: list[Request] = []
        self.faults: list[Fault] = []
        self.down: int | None = None  # every request answers this status while set
        self.forbidden = False  # every request answers 403 (the account lost access)
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._ids = 65536
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> FakeConfluence:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                fake._handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = QuietHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def origin(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def site(self) -> str:
        """The site's base URL: what Confluence returns as ``_links.base``."""
        return self.origin + self.context

    # -- content ----------------------------------------------------------------------------

    def add_space(self, key: str, name: str | None = None) -> None:
        self.spaces[key] = name or key

    def add_page(
        self,
        space: str,
        title: str,
        body: str,
        *,
        parent: str | None = None,
        labels: tuple[str, ...] = (),
        when: datetime = OLD,
    ) -> Page:
        with self._lock:
            self._ids += 1
            page = Page(str(self._ids), space, title, body, parent, set(labels), when=when)
            self.pages[page.id] = page
        return page

    def edit(
        self, pid: str, *, body: str | None = None, title: str | None = None, when: datetime
    ) -> None:
        """A new version, as an edit in the editor makes."""
        p = self.pages[pid]
        p.body = p.body if body is None else body
        p.title = p.title if title is None else title
        p.version += 1
        p.when = when

    def move(self, pid: str, *, parent: str | None, space: str | None = None) -> None:
        """A move: the page's place changes, not its version or last-modified date."""
        p = self.pages[pid]
        p.parent = parent
        if space is not None:
            p.space = space

    def fail(self, status: int = 503, times: int = 1, **kw: Any) -> None:
        self.faults.append(Fault(status=status, times=times, **kw))

    def api_requests(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path.endswith(path)]

    # -- HTTP -------------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        with self._lock:
            self.requests.append(Request(parts.path, query, dict(h.headers.items())))
            fault = self._take_fault(parts.path, query.get("cql", ""))
        try:
            if fault is not None:
                if fault.hang:
                    self.release.wait(HOLD_LIMIT_S)
                self._send_error(h, fault.status, fault.retry_after)
                return
            if self.down is not None:
                self._send_error(h, self.down)
                return
            prefix = self.context + "/rest/api/"
            v2 = self.flavor == "cloud" and parts.path == self.context + "/api/v2/spaces"
            if not parts.path.startswith(prefix) and not v2:
                self._send(h, 404, b"<html><body>Page not found</body></html>", "text/html")
                return
            if not self._authorized(h.headers.get("Authorization", "")):
                self._send_error(h, 401)
                return
            if self.forbidden:
                self._send_error(h, 403)
                return
            if v2:
                status, body = 200, self._v2_spaces(query)
            else:
                status, body = self._route(parts.path[len(prefix) :], query)
            self._send_json(h, status, body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test)

    def _take_fault(self, path: str, cql: str) -> Fault | None:
        for f in self.faults:
            if (f.path is None or f.path in path) and (f.cql is None or f.cql in cql):
                f.times -= 1
                if f.times <= 0:
                    self.faults.remove(f)
                return f
        return None

    def _authorized(self, header: str) -> bool:
        if self.flavor == "cloud":
            good = base64.b64encode(f"{CLOUD_EMAIL}:{CLOUD_API_TOKEN}".encode()).decode()
            return header == f"Basic {good}"
        return header == f"Bearer {DC_TOKEN}"

    def _send(self, h: BaseHTTPRequestHandler, status: int, body: bytes, kind: str, **hdr: str):
        h.send_response(status)
        h.send_header("Content-Type", kind)
        h.send_header("Content-Length", str(len(body)))
        for k, v in hdr.items():
            h.send_header(k.replace("_", "-"), v)
        h.end_headers()
        h.wfile.write(body)

    def _send_json(self, h: BaseHTTPRequestHandler, status: int, data: Any, **hdr: str) -> None:
        body = json.dumps(data).encode()
        self._send(h, status, body, "application/json;charset=UTF-8", **hdr)

    def _send_error(
        self, h: BaseHTTPRequestHandler, status: int, retry_after: str | None = None
    ) -> None:
        messages = {
            400: "Bad request",
            401: "This request requires authentication; the credentials are missing or invalid.",
            403: "Current user not permitted to use Confluence",
            429: "Rate limit exceeded. Please retry after the time in the Retry-After header.",
        }
        if status >= 500:
            # Proxies in front of Confluence answer outages with HTML.
            text = f"<html><body><h1>{status} Service Unavailable</h1></body></html>"
            self._send(h, status, text.encode(), "text/html")
            return
        extra = {"Retry_After": retry_after} if retry_after is not None else {}
        if status == 401:
            extra["WWW_Authenticate"] = 'Basic realm="protected-area"'
        self._send_json(h, status, error(status, messages.get(status, "Error")), **extra)

    def _route(self, path: str, q: dict[str, str]) -> tuple[int, Any]:
        expand = {e.strip() for e in q.get("expand", "").split(",") if e.strip()}
        if path.startswith("space/"):
            key = path.removeprefix("space/")
            if key not in self.spaces:
                return 404, error(404, f"No space with key : {key}")
            return 200, self._space(key)
        if path == "content":
            pages = [p for p in self._sorted() if p.space == q.get("spaceKey", p.space)]
            return 200, self._envelope("/rest/api/content", q, pages, expand, cursor=False)
        if path == "content/search":
            match = parse_cql(q.get("cql", ""))
            if isinstance(match, str):
                return 400, error(400, match)
            pages = [p for p in self._sorted() if match(p)]
            cursor = self.flavor == "cloud"
            return 200, self._envelope("/rest/api/content/search", q, pages, expand, cursor)
        if path.startswith("content/"):
            pid = path.removeprefix("content/")
            if pid not in self.pages:
                return 404, error(404, f"No content found with id: ContentId{{id={pid}}}")
            return 200, self._content(self.pages[pid], expand, top=True)
        return 404, error(404, f"null for uri: {self.site}/rest/api/{path}")

    def _sorted(self) -> list[Page]:
        return sorted(self.pages.values(), key=lambda p: int(p.id))

    def _envelope(
        self, path: str, q: dict[str, str], pages: list[Page], expand: set[str], cursor: bool
    ) -> dict[str, Any]:
        limit = max(1, min(int(q.get("limit", 25)), self.max_limit))
        if cursor and q.get("cursor"):
            start = int(base64.urlsafe_b64decode(q["cursor"]).decode().split(":")[1])
        else:
            start = int(q.get("start", 0))
        batch = pages[start : start + limit]
        rest = {k: v for k, v in q.items() if k not in ("start", "cursor", "limit")}
        links: dict[str, Any] = {
            "base": self.site,
            "context": self.context,
            "self": f"{self.site}{path}?{urlencode(q)}",
        }
        if start + limit < len(pages):
            nxt = {"limit": str(limit)}
            if cursor:
                token = f"next:{start + limit}:{len(pages)}".encode()
                nxt["cursor"] = base64.urlsafe_b64encode(token).decode()
            else:
                nxt["start"] = str(start + limit)
            # Relative to the context path, as Confluence writes it.
            links["next"] = f"{path}?{urlencode({**rest, **nxt})}"
        return {
            "results": [self._content(p, expand) for p in batch],
            "start": start,
            "limit": limit,
            "size": len(batch),
            "_links": links,
        }

    def _when(self, dt: datetime) -> str:
        if self.flavor == "cloud":
            return (
                dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
            )
        return dt.astimezone(DC_TZ).isoformat(timespec="milliseconds")

    def _space(self, key: str) -> dict[str, Any]:
        return {
            "id": 98304 + sum(map(ord, key)),
            "key": key,
            "name": self.spaces.get(key, key),
            "type": "global",
            "status": "current",
            "_expandable": {"metadata": "", "icon": "", "description": "", "homepage": ""},
            "_links": {"webui": f"/spaces/{key}", "self": f"{self.site}/rest/api/space/{key}"},
        }

    def _v2_spaces(self, q: dict[str, str]) -> dict[str, Any]:
        """Cloud's ``GET /wiki/api/v2/spaces?keys=A,B``: the visible spaces among ``keys``
        (none for an unknown key), cursor-paginated through ``_links.next``."""
        wanted = [k for k in q.get("keys", "").split(",") if k]
        keys = [k for k in sorted(self.spaces) if not wanted or k in wanted]
        results = [
            {
                "id": str(98304 + sum(map(ord, k))),
                "key": k,
                "name": self.spaces[k],
                "type": "global",
                "status": "current",
                "authorId": "5b10a2844c20",
                "createdAt": "2023-06-01T08:00:00.000Z",
                "homepageId": None,
                "description": None,
                "icon": None,
                "_links": {"webui": f"/spaces/{k}"},
            }
            for k in keys[: int(q.get("limit", 25))]
        ]
        return {"results": results, "_links": {"base": self.site}}

    def _webui(self, p: Page) -> str:
        if self.flavor == "cloud":
            return f"/spaces/{p.space}/pages/{p.id}/{quote_plus(p.title)}"
        return f"/display/{p.space}/{quote_plus(p.title)}"

    def _content(self, p: Page, expand: set[str], top: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": p.id,
            "type": "page",
            "status": "current",
            "title": p.title,
            "macroRenderedOutput": {},
            "extensions": {"position": 0},
            "_expandable": {
                "container": f"/rest/api/space/{p.space}",
                "metadata": "",
                "restrictions": f"/rest/api/content/{p.id}/restriction/byOperation",
                "history": f"/rest/api/content/{p.id}/history",
                "descendants": f"/rest/api/content/{p.id}/descendant",
            },
            "_links": {
                "self": f"{self.site}/rest/api/content/{p.id}",
                "tinyui": f"/x/{base64.urlsafe_b64encode(p.id.encode()).decode().rstrip('=')}",
                "editui": f"/pages/resumedraft.action?draftId={p.id}",
                "webui": self._webui(p),
            },
        }
        if top:
            d["_links"].update(base=self.site, context=self.context)
        if "space" in expand:
            d["space"] = self._space(p.space)
        else:
            d["_expandable"]["space"] = f"/rest/api/space/{p.space}"
        if "version" in expand:
            d["version"] = {
                "by": {"type": "known", "displayName": "Test Writer", "accountId": "5b10a2844c20"},
                "when": self._when(p.when),
                "friendlyWhen": "a while ago",
                "message": "",
                "number": p.version,
                "minorEdit": False,
                "_expandable": {"content": f"/rest/api/content/{p.id}"},
                "_links": {"self": f"{self.site}/rest/api/content/{p.id}/version/{p.version}"},
            }
        else:
            d["_expandable"]["version"] = ""
        if "ancestors" in expand:
            chain: list[Page] = []
            parent = p.parent
            while parent is not None and parent in self.pages:
                chain.insert(0, self.pages[parent])
                parent = self.pages[parent].parent
            d["ancestors"] = [self._content(a, set()) for a in chain]
        else:
            d["_expandable"]["ancestors"] = ""
        if "body.storage" in expand or "body" in expand:
            d["body"] = {
                "_expandable": {"editor": "", "view": "", "export_view": "", "styled_view": ""}
            }
            if "body.storage" in expand:
                d["body"]["storage"] = {
                    "value": p.body,
                    "representation": "storage",
                    "embeddedContent": [],
                    "_expandable": {"content": f"/rest/api/content/{p.id}"},
                }
        else:
            d["_expandable"]["body"] = ""
        for k, v in (p.override or {}).items():
            if v is None:
                d.pop(k, None)
            else:
                d[k] = v
        return d


def error(status: int, message: str) -> dict[str, Any]:
    """Confluence's JSON error body."""
    return {
        "statusCode": status,
        "data": {
            "authorized": status not in (401, 403),
            "valid": True,
            "errors": [],
            "successful": False,
        },
        "message": message,
        "reason": {
            400: "Bad Request",
            401: "Unauthorized",
            403: "Forbidden",
            404: "Not Found",
            429: "Too Many Requests",
        }.get(status, "Error"),
    }


_STR = r'"(?:[^"\\]|\\.)*"'
_CLAUSES = {
    "type": re.compile(r"type\s*=\s*\"?(page|blogpost)\"?", re.I),
    "space": re.compile(rf"space\s+in\s*\(\s*({_STR}(?:\s*,\s*{_STR})*)\s*\)", re.I),
    "space_eq": re.compile(rf"space\s*=\s*({_STR})", re.I),
    "label": re.compile(rf"label\s+in\s*\(\s*({_STR}(?:\s*,\s*{_STR})*)\s*\)", re.I),
    "lastmodified": re.compile(rf"lastmodified\s*(>=|>)\s*({_STR})", re.I),
    "id": re.compile(r"id\s+in\s*\(\s*(\d+(?:\s*,\s*\d+)*)\s*\)", re.I),
}
_AND = re.compile(r"\s+AND\s+", re.I)
_DATE_FORMATS = ("%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M", "%Y-%m-%d", "%Y/%m/%d")


def _strings(s: str) -> list[str]:
    return [m[1:-1].replace('\\"', '"').replace("\\\\", "\\") for m in re.findall(_STR, s)]


def parse_cql(cql: str) -> Callable[[Page], bool] | str:
    """A predicate for the CQL the connector sends, or the error message Confluence gives."""
    clauses: list[tuple[str, re.Match[str]]] = []
    pos, text = 0, cql.strip()
    while True:
        found = next(
            ((kind, m) for kind, rx in _CLAUSES.items() if (m := rx.match(text, pos))), None
        )
        if found is None:
            return f"Could not parse cql : {cql}"
        clauses.append(found)
        pos = found[1].end()
        if pos == len(text):
            break
        a = _AND.match(text, pos)
        if not a:
            return f"Could not parse cql : {cql}"
        pos = a.end()
    for kind, m in clauses:
        if kind == "lastmodified" and _cql_date(_strings(m.group(2))[0]) is None:
            return f"Could not parse cql : {cql} (invalid date)"
    return lambda p: all(_matches(p, kind, m) for kind, m in clauses)


def _cql_date(raw: str) -> datetime | None:
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(raw, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def _matches(p: Page, kind: str, m: re.Match[str]) -> bool:
    if kind == "type":
        return m.group(1).lower() == "page"
    if kind in ("space", "space_eq"):
        return p.space in _strings(m.group(1))
    if kind == "label":
        return bool(p.labels & set(_strings(m.group(1))))
    if kind == "lastmodified":
        since = _cql_date(_strings(m.group(2))[0])
        assert since is not None
        return p.when > since if m.group(1) == ">" else p.when >= since
    return p.id in {i.strip() for i in m.group(1).split(",")}
