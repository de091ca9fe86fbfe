"""The ``mediawiki`` connector: pages of a MediaWiki wiki, read through its Action API (api.php).

- ``list_ids`` lists every page of the configured namespaces with ``list=allpages``
  (redirects left out: they are pointers, not documents).
- ``load_all`` fetches those pages' wikitext in batches of 50 (``prop=revisions``).
- ``changed_since`` asks ``list=recentchanges`` for edits and new pages, and the move and
  delete logs (``list=logevents``) for moved and restored pages, then fetches only those.
  Deleted pages need no log: they are missing from ``list_ids``, and the sync prunes them.
- ``load(ids)`` fetches pages by page id, 50 per request: what the sync uses for pages it
  has not indexed yet that recentchanges did not show (imported with old dates, or failing
  so far), rather than re-reading the whole wiki.

A document's id is the page id, not the title. A move keeps the page id, so it is an update
of one document (new title, new link) rather than a deletion plus an addition: renaming a
whole namespace then does not trip the mass-deletion guard, and needs no full re-read.

Wikitext is turned into Markdown here (headings, lists, emphasis, links, code, tables) rather
than fetched as parsed HTML with ``action=parse``: one ``prop=revisions`` request returns 50
pages, where ``action=parse`` costs one request and one full server-side parse per page.
The price is that templates are dropped, not expanded; runbook pages are mostly prose,
headings and code, which survive intact.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import quote, urlsplit

import httpx
import mwparserfromhell
from mwparserfromhell.nodes import (
    ExternalLink,
    Heading,
    HTMLEntity,
    Tag,
    Text,
    Wikilink,
)
from mwparserfromhell.wikicode import Wikicode
from pydantic import Field, SecretStr, field_validator, model_validator

from connectors.base import ConnectorConfig, ConnectorError, Document, DocumentError
from connectors.http import (
    Backoff,
    MaxWait,
    Retries,
    RetriesExhausted,
    Retry,
    RetryFields,
    WaitTooLong,
    retry_after_seconds,
    user_agent,
)

log = logging.getLogger(__name__)

# Wiki operators ask API clients to say which tool they are.
USER_AGENT = user_agent("mediawiki connector")

# Pages per content request: the API's limit for titles/pageids without the apihighlimits
# right (bots get 500, but 50 keeps each response small).
CONTENT_BATCH = 50
# recentchanges only reaches back $wgRCMaxAge (90 days by default, 30 on Wikimedia wikis);
# an older "since" could miss changes, so such a sync reads everything instead.
RC_WINDOW = timedelta(days=30)
# Sent with every request, as the API etiquette asks of bots: when the wiki's database
# replicas lag more than this many seconds, the API answers "maxlag" and we wait.
MAXLAG_S = 5
# API error codes that mean "you may not read this"; the message says what to do.
_AUTH_ERRORS = {
    "readapidenied",
    "permissiondenied",
    "assertuserfailed",
    "assertbotfailed",
    "notloggedin",
    "mwoauth-invalid-authorization",
}
_TEXT_MODELS = {"wikitext": "markdown", "text": "text"}


class MediaWikiConfig(ConnectorConfig, RetryFields):
    type: Literal["mediawiki"]
    api_url: str = Field(
        pattern=r"^https?://",
        description="the wiki's api.php address, e.g. https://wiki.example.com/w/api.php",
    )
    namespaces: list[int] = Field(
        default_factory=lambda: [0], min_length=1, description="namespace numbers; 0 = articles"
    )
    username: str | None = Field(
        default=None, description="a bot password's login name (Special:BotPasswords), 'Me@kbot'"
    )
    password: SecretStr | None = Field(default=None, description="write ${ENV_VAR}")
    timeout_s: float = Field(default=30, gt=0, le=600, description="per request")
    # Longer than the other connectors': a busy wiki asks bots to back off (maxlag).
    max_retries: Retries = 4
    backoff_s: Backoff = 2
    retry_max_wait_s: MaxWait = 120

    @field_validator("namespaces")
    @classmethod
    def _namespaces(cls, v: list[int]) -> list[int]:
        bad = [n for n in v if n < 0]
        if bad:
            raise ValueError(
                f"{bad} are virtual namespaces (Special, Media) with no pages; "
                "use 0 for articles, 4 for the project namespace, 12 for Help, ..."
            )
        return sorted(set(v))

    @model_validator(mode="after")
    def _credentials_pair(self) -> MediaWikiConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("set both username and password (a bot password), or neither")
        return self


def wikitext_to_markdown(text: str) -> str:
    """Wikitext as Markdown: ``== H ==`` becomes ``## H``, lists, emphasis and tables stay
    readable, links become their text, code becomes fenced blocks, templates are dropped."""
    writer = _Writer()
    writer.nodes(mwparserfromhell.parse(text))
    out = "".join(writer.parts)
    out = re.sub(r"[ \t]+\n", "\n", out)
    return re.sub(r"\n{3,}", "\n\n", out).strip()


_MAGIC_WORD = re.compile(r"__[A-Z]+__")
# Links into these namespaces render as an image or a category tag, not as text.
_NON_TEXT_LINKS = {"file", "image", "media", "category"}
_CODE_BLOCKS = {"pre", "syntaxhighlight", "source"}
_INLINE_CODE = {"code", "tt", "kbd", "samp", "var"}
_BLOCKS = {"p", "div", "blockquote", "center", "section"}
# Footnotes, image galleries and what only shows when transcluded elsewhere.
_DROPPED = {"ref", "references", "gallery", "includeonly", "templatestyles", "math", "score"}


class _Writer:
    """Walks mwparserfromhell's node tree, appending Markdown to ``parts``.

    Templates, comments and template arguments are not handled, so they are dropped.
    """

    def __init__(self) -> None:
        self.parts: list[str] = []
        # List markers ("*", "#", ":", ";") seen at the start of the current line.
        self.markers = ""

    def emit(self, s: str) -> None:
        if self.markers:
            rest = s.lstrip(" \t")
            if not rest:
                return  # the space between "*" and the item's text
            if not rest.startswith("\n"):  # else an empty item: no bullet
                depth, last = len(self.markers), self.markers[-1]
                bullet = {"#": "1. ", "*": "- ", ";": "- "}.get(last, "")
                self.parts.append("  " * (depth - 1) + bullet)
                s = rest
            self.markers = ""
        self.parts.append(s)

    def block(self, s: str) -> None:
        self.markers = ""
        self.parts.append(f"\n\n{s}\n\n")

    def inline(self, code: Wikicode | None) -> str:
        if code is None:
            return ""
        sub = _Writer()
        sub.nodes(code)
        return re.sub(r"\s+", " ", "".join(sub.parts)).strip()

    def nodes(self, code: Wikicode) -> None:
        for node in code.nodes:
            if isinstance(node, Text):
                self.emit(_MAGIC_WORD.sub("", str(node)))
            elif isinstance(node, Heading):
                self.block(f"{'#' * node.level} {self.inline(node.title)}")
            elif isinstance(node, Wikilink):
                self._wikilink(node)
            elif isinstance(node, ExternalLink):
                self.emit(self.inline(node.title) if node.title else str(node.url))
            elif isinstance(node, HTMLEntity):
                self.emit(node.normalize())
            elif isinstance(node, Tag):
                self._tag(node)

    def _wikilink(self, node: Wikilink) -> None:
        target = str(node.title).strip()
        prefix = target.split(":", 1)[0].strip().lower() if ":" in target else ""
        if prefix in _NON_TEXT_LINKS:
            return  # [[:Category:X]] (leading colon) is an ordinary link, handled below
        self.emit(self.inline(node.text) if node.text else target.lstrip(":"))

    def _tag(self, node: Tag) -> None:
        name = str(node.tag).strip().lower()
        if node.wiki_markup in ("*", "#", ":", ";") and name in ("li", "dt", "dd"):
            self.markers += str(node.wiki_markup)
        elif name in _DROPPED:
            return
        elif name in ("b", "strong", "i", "em"):
            inner = self.inline(node.contents)
            mark = "**" if name in ("b", "strong") else "_"
            if inner:
                self.emit(f"{mark}{inner}{mark}")
        elif name in _CODE_BLOCKS:
            body = str(node.contents or "").strip("\n")
            if name == "pre":
                body = html.unescape(body)  # <pre> still reads entities; the others are raw
            lang = str(node.get("lang").value).strip() if node.has("lang") else ""
            self.block(f"```{lang}\n{body}\n```")
        elif name in _INLINE_CODE:
            self.emit(f"`{html.unescape(str(node.contents or '')).strip()}`")
        elif name == "nowiki":
            self.emit(html.unescape(str(node.contents or "")))
        elif name == "br":
            self.emit("\n")
        elif name == "hr":
            self.block("")
        elif name == "table":
            self._table(node)
        elif name in _BLOCKS:
            self.parts.append("\n\n")
            self.nodes(node.contents)
            self.parts.append("\n\n")
        elif node.contents is not None:
            self.nodes(node.contents)

    def _table(self, node: Tag) -> None:
        rows: list[list[str]] = []
        caption = ""
        current: list[str] = []  # cells before the first "|-" belong to an implicit row
        for child in node.contents.nodes:
            if not isinstance(child, Tag):
                continue
            name = str(child.tag).lower()
            if name == "tr":
                if current:
                    rows.append(current)
                    current = []
                cells = [self._cell(c) for c in child.contents.nodes if _is_cell(c)]
                if cells:
                    rows.append(cells)
            elif name == "caption" or (name == "td" and str(child).startswith("|+")):
                caption = self.inline(child.contents).lstrip("+ ").strip()
            elif _is_cell(child):
                current.append(self._cell(child))
        if current:
            rows.append(current)
        lines = [caption] if caption else []
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        self.block("\n".join(lines))

    def _cell(self, cell: Tag) -> str:
        return self.inline(cell.contents).replace("|", "\\|")


def _is_cell(node: object) -> bool:
    return isinstance(node, Tag) and str(node.tag).lower() in ("td", "th")


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_timestamp(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _retry_after(response: httpx.Response) -> float | None:
    return retry_after_seconds(response.headers.get("Retry-After"))


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class MediaWikiConnector:
    """Reads one wiki. One instance serves one sync run: the login, the site's article path
    and the page listing are fetched once and shared by ``list_ids`` and ``load_all``."""

    type_name: ClassVar[str] = "mediawiki"

    def __init__(self, config: MediaWikiConfig, workdir: Path | None = None):
        self.config = config
        self.problems: list[DocumentError] = []
        self._client: httpx.Client | None = None
        self._article_url: str | None = None  # e.g. https://wiki.example.com/wiki/$1
        self._listing: list[int] | None = None
        self.label = f"mediawiki connector {config.name!r}"

    # -- the protocol ---------------------------------------------------------------------

    def list_ids(self) -> set[str]:
        return {str(p) for p in self._page_ids()}

    def load_all(self) -> Iterator[Document]:
        self.problems = []
        yield from self._fetch(pageids=self._page_ids())

    def load(self, ids: set[str]) -> Iterator[Document]:
        """The pages with these page ids; one deleted since, turned into a redirect or moved
        out of the namespaces is not yielded."""
        self.problems = []
        pageids = sorted(int(i) for i in ids if i.isascii() and i.isdigit())
        yield from self._fetch(pageids=pageids)

    def changed_since(self, since: datetime) -> Iterator[Document]:
        self.problems = []
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        if datetime.now(UTC) - since > RC_WINDOW:
            yield from self._fetch(pageids=self._page_ids())
            return
        start = _timestamp(since)
        wanted = set(self.config.namespaces)
        pageids: set[int] = set()
        titles: set[str] = set()
        for rc in self._list(
            "recentchanges",
            rcstart=start,
            rcdir="newer",
            rcnamespace="|".join(map(str, self.config.namespaces)),
            rctype="edit|new",
            rcprop="ids|title|timestamp",
        ):
            if rc.get("pageid"):
                pageids.add(int(rc["pageid"]))
        for event in self._list(
            "logevents",
            letype="move",
            lestart=start,
            ledir="newer",
            leprop="ids|title|type|details|timestamp",
        ):
            params = event.get("params") or {}
            # The page that moved keeps its id (logpage); its new title is fetched too, in
            # case an older wiki reports the redirect's id there. Moved out of the
            # namespaces: list_ids no longer lists it, so the sync deletes it.
            if params.get("target_ns") in wanted and params.get("target_title"):
                titles.add(str(params["target_title"]))
                if event.get("logpage"):
                    pageids.add(int(event["logpage"]))
        for event in self._list(
            "logevents",
            letype="delete",
            lestart=start,
            ledir="newer",
            leprop="ids|title|type|timestamp",
        ):
            # An undeleted page comes back with its old edits: recentchanges shows no edit.
            if event.get("action") == "restore" and event.get("ns") in wanted:
                titles.add(str(event["title"]))
        yield from self._fetch(pageids=sorted(pageids), titles=sorted(titles))

    # -- reading pages --------------------------------------------------------------------

    def _page_ids(self) -> list[int]:
        if self._listing is None:
            ids: list[int] = []
            for ns in self.config.namespaces:
                ids += [
                    int(p["pageid"])
                    for p in self._list(
                        "allpages", apnamespace=str(ns), apfilterredir="nonredirects"
                    )
                ]
            self._listing = ids
        return self._listing

    def _fetch(self, pageids: list[int], titles: Iterable[str] = ()) -> Iterator[Document]:
        """The current revision of these pages, as documents; each page at most once."""
        seen: set[int] = set()
        requests = [("pageids", [str(p) for p in pageids]), ("titles", list(titles))]
        for key, values in requests:
            for batch in _batches(values, CONTENT_BATCH):
                for page in self._pages(key, batch):
                    pageid = page.get("pageid")
                    if not pageid or page.get("missing") or pageid in seen:
                        continue  # deleted since it was listed or changed: pruned by the sync
                    seen.add(pageid)
                    if page.get("redirect") or page.get("ns") not in self.config.namespaces:
                        continue  # became a redirect, or moved out: list_ids drops it too
                    try:
                        yield self._document(page)
                    except DocumentError as e:
                        self.problems.append(e)

    def _pages(self, key: str, values: list[str]) -> list[dict[str, Any]]:
        """Pages with their latest revision, merged across ``rvcontinue`` responses (a big
        batch comes back a few pages' content at a time)."""
        merged: dict[str, dict[str, Any]] = {}
        for query in self._query(
            prop="info|revisions",
            rvprop="ids|timestamp|content",
            rvslots="main",
            **{key: "|".join(values)},
        ):
            for page in query.get("pages", []):
                ident = str(page.get("pageid") or page.get("title"))
                known = merged.setdefault(ident, page)
                if page.get("revisions") and not known.get("revisions"):
                    known["revisions"] = page["revisions"]
        return list(merged.values())

    def _document(self, page: dict[str, Any]) -> Document:
        pageid = str(page["pageid"])
        title = str(page.get("title", pageid))
        where = f"page {title!r}"
        revisions = page.get("revisions") or []
        if not revisions or not isinstance(revisions[0], dict):
            raise DocumentError(pageid, f"{where}: the wiki returned no revision, skipped")
        rev = revisions[0]
        slot = (rev.get("slots") or {}).get("main") or {}
        if slot.get("texthidden") or rev.get("texthidden"):
            raise DocumentError(pageid, f"{where}: its text is hidden (revision deleted), skipped")
        model = slot.get("contentmodel", "wikitext")
        if model not in _TEXT_MODELS:
            raise DocumentError(
                pageid, f"{where}: content model {model!r} is not wikitext or text, skipped"
            )
        content = slot.get("content")
        if not isinstance(content, str):
            raise DocumentError(pageid, f"{where}: the revision has no text content, skipped")
        try:
            modified = _parse_timestamp(str(rev.get("timestamp", "")))
        except ValueError:
            raise DocumentError(
                pageid, f"{where}: unreadable revision timestamp {rev.get('timestamp')!r}"
            ) from None
        fmt = _TEXT_MODELS[model]
        try:
            text = wikitext_to_markdown(content) if fmt == "markdown" else content.strip()
        except RecursionError:
            raise DocumentError(pageid, f"{where}: markup is nested too deeply, skipped") from None
        if not text:
            raise DocumentError(pageid, f"{where}: the page has no text, skipped")
        return Document(
            connector=self.config.name,
            id=pageid,
            title=title,
            url=self._page_url(title),
            text=text,
            last_modified=modified,
            audience=self.config.audience,
            format=fmt,
            metadata={"namespace": str(page.get("ns", "")), "revid": str(rev.get("revid", ""))},
        )

    def _page_url(self, title: str) -> str:
        assert self._article_url is not None  # set by the first request's setup
        # As MediaWiki's wfUrlencode writes titles: spaces as "_", these few left readable.
        return self._article_url.replace("$1", quote(title.replace(" ", "_"), safe=";:@$!*(),/~"))

    # -- the API --------------------------------------------------------------------------

    def _list(self, module: str, **params: str) -> Iterator[dict[str, Any]]:
        """Every item of a ``list=`` module, following continuation."""
        prefix = {"allpages": "ap", "recentchanges": "rc", "logevents": "le"}[module]
        for query in self._query(list=module, **{f"{prefix}limit": "max"}, **params):
            yield from query.get(module, [])

    def _query(self, **params: str) -> Iterator[dict[str, Any]]:
        """The ``query`` part of each response of an ``action=query``, with continuation:
        each response's ``continue`` values are sent back as they are, until there is none."""
        cont: dict[str, Any] = {"continue": ""}
        while True:
            data = self._call({"action": "query", **params, **cont})
            query = data.get("query") or {}
            if not isinstance(query, dict):
                raise ConnectorError(f"{self.label}: unexpected answer from {self._where()}")
            yield query
            nxt = data.get("continue")
            if not isinstance(nxt, dict) or not nxt:
                return
            cont = {k: str(v) for k, v in nxt.items()}

    def _where(self) -> str:
        u = urlsplit(self.config.api_url)
        return f"{u.hostname}{':' + str(u.port) if u.port else ''}{u.path}"

    def _setup(self) -> httpx.Client:
        if self._client is not None:
            return self._client
        self._client = httpx.Client(
            timeout=self.config.timeout_s,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            follow_redirects=True,
        )
        try:
            if self.config.username is not None:
                self._login()
            general = (
                self._call({"action": "query", "meta": "siteinfo", "siprop": "general"})
                .get("query", {})
                .get("general", {})
            )
            server, path = general.get("server"), general.get("articlepath")
            if not isinstance(server, str) or not isinstance(path, str) or "$1" not in path:
                raise ConnectorError(
                    f"{self.label}: {self._where()} did not describe the wiki (meta=siteinfo "
                    "has no server and articlepath); is api_url the wiki's api.php?"
                )
            if server.startswith("//"):  # protocol-relative, as on Wikimedia wikis
                server = f"{urlsplit(self.config.api_url).scheme}:{server}"
            self._article_url = server.rstrip("/") + path
        except BaseException:
            self._client.close()
            self._client = None
            raise
        return self._client

    def _login(self) -> None:
        """Log in with a bot password; the session cookie then goes with every request."""
        c = self.config
        assert c.username is not None and c.password is not None
        token = (
            self._call({"action": "query", "meta": "tokens", "type": "login"})
            .get("query", {})
            .get("tokens", {})
            .get("logintoken")
        )
        if not token:
            raise ConnectorError(f"{self.label}: the wiki gave no login token")
        result = self._call(
            {
                "action": "login",
                "lgname": c.username,
                "lgpassword": c.password.get_secret_value(),
                "lgtoken": token,
            },
            post=True,
        ).get("login", {})
        if result.get("result") != "Success":
            reason = result.get("reason") or result.get("result") or "no reason given"
            if isinstance(reason, dict):
                reason = reason.get("text") or reason.get("info") or reason.get("code")
            raise ConnectorError(
                f"{self.label}: login as {c.username!r} failed: {reason}. Use a bot password "
                "from Special:BotPasswords (username 'User@botname') with read rights"
            )

    def _call(self, params: dict[str, str], *, post: bool = False) -> dict[str, Any]:
        """One API request, retried after 5xx, timeouts, 429 and maxlag, with backoff."""
        client = self._setup()
        c = self.config
        params = {**params, "format": "json", "formatversion": "2", "maxlag": str(MAXLAG_S)}
        # Never ask again sooner than the wiki said: a longer Retry-After fails the sync.
        policy = c.retry_policy(over_max_wait="fail")
        try:
            return policy.call(lambda: self._attempt(client, params, post), what=self.label)
        except WaitTooLong as e:
            raise ConnectorError(f"{self.label}: {e}") from None
        except RetriesExhausted as e:
            raise ConnectorError(
                f"{self.label}: {self._where()}: {e}; the wiki is down or unreachable"
            ) from None

    def _attempt(self, client: httpx.Client, params: dict[str, str], post: bool) -> dict[str, Any]:
        url = self.config.api_url
        try:
            r = client.post(url, data=params) if post else client.get(url, params=params)
        except httpx.TimeoutException:
            raise Retry(f"no answer within {self.config.timeout_s:g}s") from None
        except httpx.TransportError as e:
            raise Retry(f"cannot connect ({type(e).__name__})") from None
        if r.status_code == 429:
            raise Retry("rate limited (HTTP 429)", _retry_after(r))
        if r.status_code >= 500:
            raise Retry(f"HTTP {r.status_code}", _retry_after(r))
        if r.status_code in (401, 403):
            raise ConnectorError(
                f"{self.label}: {self._where()} refused access (HTTP {r.status_code}); "
                "check username and password, or what guards the wiki (a proxy, SSO)"
            )
        if r.status_code >= 400:
            raise ConnectorError(f"{self.label}: HTTP {r.status_code} from {self._where()}")
        try:
            data = r.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise ConnectorError(
                f"{self.label}: {self._where()} did not answer with API JSON "
                f"({r.headers.get('content-type', 'no content type')}); is api_url the "
                "address of the wiki's api.php?"
            )
        error = data.get("error")
        if isinstance(error, dict):
            code, info = str(error.get("code", "")), str(error.get("info", ""))
            if code == "maxlag":
                raise Retry(f"the wiki is lagging ({info})", _retry_after(r))
            if code in _AUTH_ERRORS:
                who = (
                    f"the account {self.config.username!r}"
                    if self.config.username
                    else "anonymous readers (set username and password: a bot password)"
                )
                raise ConnectorError(
                    f"{self.label}: the wiki does not let {who} read ({code}: {info})"
                )
            raise ConnectorError(f"{self.label}: the wiki answered {code}: {info}")
        return data
