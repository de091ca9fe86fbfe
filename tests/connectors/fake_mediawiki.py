"""A local stand-in for a MediaWiki wiki's Action API (``api.php``), on 127.0.0.1.

It answers in the documented JSON of ``format=json&formatversion=2``:

- ``action=query`` with ``meta=siteinfo`` (general), ``meta=tokens`` (login),
  ``list=allpages``, ``list=recentchanges``, ``list=logevents`` (move and delete) and
  ``prop=info|revisions`` (``rvslots=main``) by ``pageids`` or ``titles``;
- ``action=login`` (POST) with a bot password, setting a session cookie;
- continuation as the API does it: a ``continue`` object whose values the client sends back;
- errors as ``{"error": {"code", "info", "docref"}}`` with the ``MediaWiki-API-Error`` header,
  ``maxlag`` with ``Retry-After``, and scripted faults (HTTP 429/5xx, hangs, garbage).

The wiki's state (pages, recent changes, logs) lives in ``FakeWiki``; tests edit, move and
delete pages through it and every change is logged the way MediaWiki logs it.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.fake_http import QuietHTTPServer

# What a hung request waits for before answering anyway (the test releases it sooner).
HANG_LIMIT_S = 30.0
DOCREF = "See http://127.0.0.1/w/api.php for API usage."


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Page:
    pageid: int
    ns: int
    title: str
    text: str
    revid: int
    timestamp: str
    contentmodel: str = "wikitext"
    texthidden: bool = False

    @property
    def redirect(self) -> bool:
        return self.text.lstrip().upper().startswith("#REDIRECT")


@dataclass
class Fault:
    """A scripted failure for the next ``times`` requests that ``match``.

    kind: "status" (HTTP ``status`` with ``headers``), "maxlag" (the API's lag error),
    "hang" (no answer until released), "garbage" (HTTP 200 with an HTML page).
    """

    kind: str
    times: int = 1
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    match: Callable[[dict[str, str]], bool] = lambda params: True


class FakeWiki:
    """The wiki's state and the API's behaviour; thread-safe (the server is threaded)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pages: dict[int, Page] = {}
        self.recentchanges: list[dict[str, Any]] = []
        self.logevents: list[dict[str, Any]] = []
        self.faults: list[Fault] = []
        self.requests: list[dict[str, str]] = []
        self.user_agents: set[str] = set()
        self.release = threading.Event()
        # What "max" means for a limit; real wikis allow 500 (5000 for bots).
        self.max_limit = 500
        # Pages whose content one response carries; the rest follow via rvcontinue.
        self.content_per_response = 50
        # Bot passwords: login name -> password. With private=True only they may read.
        self.accounts: dict[str, str] = {}
        self.private = False
        self.sessions: dict[str, str | None] = {}  # session cookie -> logged-in user
        self.server = ""  # set by serve_wiki: "//127.0.0.1:PORT"
        self._ids = 0

    # -- changing the wiki, as its users would ---------------------------------------------

    def _next(self) -> int:
        self._ids += 1
        return self._ids

    def create(
        self, title: str, text: str, ns: int = 0, at: str | None = None, **extra: Any
    ) -> Page:
        """A new page; ``at`` backdates it (an ISO timestamp), as if made long ago."""
        with self.lock:
            page = Page(self._next(), ns, title, text, self._next(), at or now(), **extra)
            self.pages[page.pageid] = page
            self._rc("new", page, old_revid=0)
            return page

    def edit(self, title: str, text: str) -> Page:
        with self.lock:
            page = self.by_title(title)
            old = page.revid
            page.text, page.revid, page.timestamp = text, self._next(), now()
            self._rc("edit", page, old_revid=old)
            return page

    def delete(self, title: str) -> None:
        with self.lock:
            page = self.by_title(title)
            del self.pages[page.pageid]
            self._log("delete", "delete", page.ns, page.title, page.pageid, {})

    def move(self, old: str, new: str, *, leave_redirect: bool = True, new_ns: int = 0) -> Page:
        with self.lock:
            page = self.by_title(old)
            old_ns = page.ns
            page.title, page.ns = new, new_ns
            params: dict[str, Any] = {"target_ns": new_ns, "target_title": new}
            if not leave_redirect:
                params["suppressredirect"] = True
            self._log("move", "move", old_ns, old, page.pageid, params)
            if leave_redirect:
                redirect = Page(
                    self._next(), old_ns, old, f"#REDIRECT [[{new}]]", self._next(), now()
                )
                self.pages[redirect.pageid] = redirect
            return page

    def by_title(self, title: str) -> Page:
        for page in self.pages.values():
            if page.title == title:
                return page
        raise KeyError(title)

    def _rc(self, kind: str, page: Page, old_revid: int) -> None:
        self.recentchanges.append(
            {
                "type": kind,
                "ns": page.ns,
                "title": page.title,
                "pageid": page.pageid,
                "revid": page.revid,
                "old_revid": old_revid,
                "rcid": self._next(),
                "timestamp": page.timestamp,
            }
        )

    def _log(self, type_: str, action: str, ns: int, title: str, pageid: int, params: dict) -> None:
        self.logevents.append(
            {
                "logid": self._next(),
                "ns": ns,
                "title": title,
                "pageid": 0,
                "logpage": pageid,
                "params": params,
                "type": type_,
                "action": action,
                "user": "Admin",
                "timestamp": now(),
                "comment": "",
            }
        )

    # -- the API ---------------------------------------------------------------------------

    def handle(
        self, params: dict[str, str], cookie: str | None, post: bool, user_agent: str = ""
    ) -> tuple[int, dict[str, str], bytes]:
        """One request: (status, headers, body)."""
        with self.lock:
            self.requests.append(dict(params))
            self.user_agents.add(user_agent)
            fault = next((f for f in self.faults if f.times > 0 and f.match(params)), None)
            if fault is not None:
                fault.times -= 1
        if fault is not None:
            answer = self._fault(fault, params)
            if answer is not None:
                return answer
        headers: dict[str, str] = {}
        session = cookie if cookie in self.sessions else None
        if session is None:
            session = secrets.token_hex(8)
            self.sessions[session] = None
            headers["Set-Cookie"] = f"fakewiki_session={session}; path=/; HttpOnly"
        try:
            body = self._api(params, session, post)
        except ApiError as e:
            headers["MediaWiki-API-Error"] = e.code
            body = {"error": {"code": e.code, "info": e.info, "docref": DOCREF}}
        return 200, headers, json.dumps(body).encode()

    def _fault(
        self, fault: Fault, params: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes] | None:
        if fault.kind == "hang":
            self.release.wait(HANG_LIMIT_S)
            return 503, {}, b"released"
        if fault.kind == "garbage":
            return 200, {"Content-Type": "text/html"}, b"<html><body>Login portal</body></html>"
        if fault.kind == "maxlag":
            if "maxlag" not in params:
                return None  # the lag only shows to clients that ask for it
            body = {
                "error": {
                    "code": "maxlag",
                    "info": "Waiting for 10.64.0.12: 7 seconds lagged.",
                    "host": "10.64.0.12",
                    "lag": 7,
                    "type": "db",
                    "docref": DOCREF,
                }
            }
            headers = {"Retry-After": "5", "X-Database-Lag": "7", "MediaWiki-API-Error": "maxlag"}
            return 200, {**headers, **fault.headers}, json.dumps(body).encode()
        body = f"<html><body><h1>{fault.status}</h1></body></html>".encode()
        return fault.status, {"Content-Type": "text/html", **fault.headers}, body

    def _api(self, p: dict[str, str], session: str, post: bool) -> dict[str, Any]:
        if p.get("format") != "json" or p.get("formatversion") != "2":
            raise ApiError("badvalue", "This fake speaks only format=json&formatversion=2.")
        action = p.get("action", "help")
        if action == "login":
            return self._login(p, session, post)
        if action != "query":
            raise ApiError("badvalue", f'Unrecognized value for parameter "action": {action}.')
        if p.get("meta") == "tokens" and p.get("type") == "login":
            return {"batchcomplete": True, "query": {"tokens": {"logintoken": session + "+\\"}}}
        if self.private and self.sessions.get(session) is None:
            raise ApiError("readapidenied", "You need read permission to use this module.")
        if p.get("meta") == "siteinfo":
            return {"batchcomplete": True, "query": {"general": self._general()}}
        lists = {
            "allpages": self._allpages,
            "recentchanges": self._recentchanges,
            "logevents": self._logevents,
        }
        if p.get("list") in lists:
            return lists[p["list"]](p)
        if "revisions" in p.get("prop", "").split("|"):
            return self._revisions(p)
        raise ApiError("badvalue", "The fake does not answer this query.")

    def _general(self) -> dict[str, Any]:
        return {
            "mainpage": "Main Page",
            "base": f"http:{self.server}/wiki/Main_Page",
            "sitename": "Ops Wiki",
            "generator": "MediaWiki 1.41.1",
            "server": self.server,
            "servername": "127.0.0.1",
            "articlepath": "/wiki/$1",
            "scriptpath": "/w",
            "script": "/w/index.php",
            "lang": "en",
        }

    def _login(self, p: dict[str, str], session: str, post: bool) -> dict[str, Any]:
        if not post:
            raise ApiError("mustbeposted", 'The "login" module requires a POST request.')
        if p.get("lgtoken") != session + "+\\":
            return {"login": {"result": "WrongToken"}}
        name = p.get("lgname", "")
        if name in self.accounts and self.accounts[name] == p.get("lgpassword"):
            self.sessions[session] = name
            return {"login": {"result": "Success", "lguserid": 7, "lgusername": name}}
        reason = "Incorrect username or password entered. Please try again."
        return {"login": {"result": "Failed", "reason": reason}}

    def _limit(self, value: str | None, default: int = 10) -> int:
        if value == "max":
            return self.max_limit
        n = int(value) if value else default
        return max(1, min(n, self.max_limit))

    def _allpages(self, p: dict[str, str]) -> dict[str, Any]:
        ns = int(p.get("apnamespace", "0"))
        redirects = p.get("apfilterredir", "all")
        with self.lock:
            pages = sorted(
                (pg for pg in self.pages.values() if pg.ns == ns),
                key=lambda pg: pg.title.replace(" ", "_"),
            )
        if redirects == "nonredirects":
            pages = [pg for pg in pages if not pg.redirect]
        elif redirects == "redirects":
            pages = [pg for pg in pages if pg.redirect]
        start = p.get("apcontinue")
        if start:
            pages = [pg for pg in pages if pg.title.replace(" ", "_") >= start]
        limit = self._limit(p.get("aplimit"))
        out: dict[str, Any] = {"batchcomplete": True}
        if len(pages) > limit:
            nxt = pages[limit].title.replace(" ", "_")
            out["continue"] = {"apcontinue": nxt, "continue": "-||"}
        out["query"] = {
            "allpages": [
                {"pageid": pg.pageid, "ns": pg.ns, "title": pg.title} for pg in pages[:limit]
            ]
        }
        return out

    def _timeline(
        self, items: list[dict[str, Any]], p: dict[str, str], prefix: str, key: str
    ) -> tuple[list[dict[str, Any]], dict[str, str] | None]:
        """Filter by start/end/dir and page with ``<prefix>continue`` = "timestamp14|id"."""
        newer = p.get(f"{prefix}dir", "older") == "newer"
        start, end = p.get(f"{prefix}start"), p.get(f"{prefix}end")
        if start and end and (start > end) == newer:
            raise ApiError(
                "badparams",
                f'"{prefix}start" must be {"before" if newer else "after"} "{prefix}end".',
            )
        chosen = sorted(items, key=lambda i: (i["timestamp"], i[key]), reverse=not newer)
        lo, hi = (start, end) if newer else (end, start)
        chosen = [i for i in chosen if (not lo or i["timestamp"] >= lo)]
        chosen = [i for i in chosen if (not hi or i["timestamp"] <= hi)]
        cont = p.get(f"{prefix}continue")
        if cont:
            ts, _, ident = cont.partition("|")
            stamp = f"{ts[:4]}-{ts[4:6]}-{ts[6:8]}T{ts[8:10]}:{ts[10:12]}:{ts[12:14]}Z"
            pos = (stamp, int(ident))
            if newer:
                chosen = [i for i in chosen if (i["timestamp"], i[key]) >= pos]
            else:
                chosen = [i for i in chosen if (i["timestamp"], i[key]) <= pos]
        limit = self._limit(p.get(f"{prefix}limit"))
        nxt = None
        if len(chosen) > limit:
            after = chosen[limit]
            ts = "".join(ch for ch in after["timestamp"] if ch.isdigit())
            nxt = {f"{prefix}continue": f"{ts}|{after[key]}", "continue": "-||"}
        return chosen[:limit], nxt

    def _recentchanges(self, p: dict[str, str]) -> dict[str, Any]:
        namespaces = {int(n) for n in p["rcnamespace"].split("|")} if p.get("rcnamespace") else None
        types = set(p.get("rctype", "edit|new|log|categorize").split("|"))
        with self.lock:
            items = [
                dict(rc)
                for rc in self.recentchanges
                if rc["type"] in types and (namespaces is None or rc["ns"] in namespaces)
            ]
        chosen, nxt = self._timeline(items, p, "rc", "rcid")
        props = set(p.get("rcprop", "title|timestamp|ids").split("|"))
        shown = []
        for rc in chosen:
            entry: dict[str, Any] = {"type": rc["type"]}
            if "title" in props:
                entry.update(ns=rc["ns"], title=rc["title"])
            if "ids" in props:
                entry.update(
                    pageid=rc["pageid"],
                    revid=rc["revid"],
                    old_revid=rc["old_revid"],
                    rcid=rc["rcid"],
                )
            if "timestamp" in props:
                entry["timestamp"] = rc["timestamp"]
            shown.append(entry)
        out: dict[str, Any] = {"batchcomplete": True}
        if nxt:
            out["continue"] = nxt
        out["query"] = {"recentchanges": shown}
        return out

    def _logevents(self, p: dict[str, str]) -> dict[str, Any]:
        letype = p.get("letype")
        with self.lock:
            items = [dict(e) for e in self.logevents if not letype or e["type"] == letype]
        chosen, nxt = self._timeline(items, p, "le", "logid")
        props = set(p.get("leprop", "ids|title|type|user|timestamp|comment|details").split("|"))
        shown = []
        for e in chosen:
            entry: dict[str, Any] = {}
            if "ids" in props:
                entry.update(logid=e["logid"], pageid=e["pageid"], logpage=e["logpage"])
            if "title" in props:
                entry.update(ns=e["ns"], title=e["title"])
            if "details" in props:
                entry["params"] = e["params"]
            if "type" in props:
                entry.update(type=e["type"], action=e["action"])
            if "timestamp" in props:
                entry["timestamp"] = e["timestamp"]
            shown.append(entry)
        out: dict[str, Any] = {"batchcomplete": True}
        if nxt:
            out["continue"] = nxt
        out["query"] = {"logevents": shown}
        return out

    def _revisions(self, p: dict[str, str]) -> dict[str, Any]:
        if "pageids" in p and "titles" in p:
            raise ApiError(
                "invalidparammix", 'The parameters "titles" and "pageids" can not be used together.'
            )
        key = "pageids" if "pageids" in p else "titles"
        values = [v for v in p.get(key, "").split("|") if v]
        if len(values) > 50:
            raise ApiError(
                "toomanyvalues", f'Too many values supplied for parameter "{key}". The limit is 50.'
            )
        props = set(p.get("rvprop", "ids|timestamp|flags|comment|user").split("|"))
        with self.lock:
            found: list[tuple[str, Page | None]] = []
            for v in values:
                if key == "pageids":
                    found.append((v, self.pages.get(int(v))))
                else:
                    found.append((v, next((x for x in self.pages.values() if x.title == v), None)))
        start = int(p.get("rvcontinue", "0").split("|")[0] or 0)
        with_content = [pg for _, pg in found if pg is not None and pg.pageid >= start]
        with_content.sort(key=lambda pg: pg.pageid)
        now_serving = {pg.pageid for pg in with_content[: self.content_per_response]}
        pages = []
        for asked, pg in found:
            if pg is None:
                pages.append(
                    {"pageid": int(asked), "missing": True}
                    if key == "pageids"
                    else {"ns": 0, "title": asked, "missing": True}
                )
                continue
            entry: dict[str, Any] = {
                "pageid": pg.pageid,
                "ns": pg.ns,
                "title": pg.title,
                "contentmodel": pg.contentmodel,
                "pagelanguage": "en",
                "touched": pg.timestamp,
                "lastrevid": pg.revid,
                "length": len(pg.text.encode()),
            }
            if pg.redirect:
                entry["redirect"] = True
            if pg.pageid in now_serving:
                rev: dict[str, Any] = {}
                if "ids" in props:
                    rev.update(revid=pg.revid, parentid=0)
                if "timestamp" in props:
                    rev["timestamp"] = pg.timestamp
                if "content" in props:
                    slot: dict[str, Any] = {"contentmodel": pg.contentmodel}
                    if pg.texthidden:
                        slot["texthidden"] = True
                    else:
                        slot.update(contentformat="text/x-wiki", content=pg.text)
                    rev["slots"] = {"main": slot}
                entry["revisions"] = [rev]
            pages.append(entry)
        out: dict[str, Any] = {}
        rest = with_content[self.content_per_response :]
        if rest:
            out["continue"] = {"rvcontinue": f"{rest[0].pageid}|{rest[0].revid}", "continue": "||"}
        else:
            out["batchcomplete"] = True
        out["query"] = {"pages": pages}
        return out


class ApiError(Exception):
    def __init__(self, code: str, info: str):
        super().__init__(info)
        self.code = code
        self.info = info


class _Handler(BaseHTTPRequestHandler):
    wiki: FakeWiki

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass

    def _answer(self, params: dict[str, str], post: bool) -> None:
        cookie = None
        for part in self.headers.get("Cookie", "").split(";"):
            k, _, v = part.strip().partition("=")
            if k == "fakewiki_session":
                cookie = v
        if urlsplit(self.path).path != "/w/api.php":
            status, headers, body = 404, {"Content-Type": "text/html"}, b"<h1>Not Found</h1>"
        else:
            ua = self.headers.get("User-Agent", "")
            status, headers, body = self.wiki.handle(params, cookie, post, ua)
        self.send_response(status)
        headers.setdefault("Content-Type", "application/json; charset=utf-8")
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._answer(dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True)), False)

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers.get("Content-Length", "0"))
        form = self.rfile.read(length).decode()
        query = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        self._answer({**query, **dict(parse_qsl(form, keep_blank_values=True))}, True)


@contextmanager
def serve_wiki(wiki: FakeWiki) -> Iterator[str]:
    """Serve ``wiki`` on 127.0.0.1 with a free port; yields its api.php URL."""
    handler = type("Handler", (_Handler,), {"wiki": wiki})
    server = QuietHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    port = server.server_address[1]
    wiki.server = f"//127.0.0.1:{port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/w/api.php"
    finally:
        wiki.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)
