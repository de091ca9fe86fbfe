"""The ``confluence`` connector: the pages of Confluence Cloud or Data Center spaces, read over
the REST API below ``base_url``.

- Data Center lists a space with ``/rest/api/content?spaceKey=...``; Cloud, which deprecated
  that endpoint, with CQL (``/rest/api/content/search``). Labels, incremental syncs and
  re-reads by id use CQL on both. Every listing follows ``_links.next``.
- A document's id is the page id, which survives renames and moves.
- Its title is the page's title path, "Space home › Parent › Page": the chunker starts every
  chunk's heading path with the title, so each chunk carries where the page sits in the tree.
- Its text is the storage-format (XHTML) body as Markdown: headings, code macros, tables,
  lists and panels stay readable, and the heading-aware chunker works on it.
- ``changed_since`` asks CQL for pages with ``lastmodified`` since the last sync, and also
  re-reads pages whose place in the tree changed: moving a page, or renaming a parent, changes
  the title path without touching the page's own last-modified date. To tell, the connector
  keeps each page's space and title path from its last complete read in
  ``<data_dir>/confluence/<name>.json``.
- ``load(ids)`` reads pages by id (``id in (...)`` CQL, 25 a query), for pages the index
  does not have yet that ``changed_since`` did not bring.
- ``list_ids`` lists page ids (without bodies) for pruning. A space that does not exist or
  that the account cannot see is an error, not an empty space, so a typo or a revoked
  permission never looks like every page was deleted.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import quote, urlsplit

import httpx
from bs4 import BeautifulSoup, Tag
from pydantic import Field, SecretStr, ValidationInfo, field_validator

from connectors.base import ConnectorConfig, ConnectorError, Document, DocumentError, state_dir
from connectors.http import (
    TRANSIENT_STATUSES,
    USER_AGENT,
    RetriesExhausted,
    Retry,
    RetryFields,
    retry_after_seconds,
)
from connectors.parsing import MAX_FILE_BYTES, html_to_markdown

log = logging.getLogger(__name__)


SEP = " › "
# CQL reads a date in the timezone of the account (Cloud) or server (Data Center), which the
# connector cannot know, and the two clocks may disagree: ask for a day more. Re-reading a
# page that did not change costs one hash comparison in the sync.
CQL_MARGIN = timedelta(days=1)
# Pages whose place in the tree changed are fetched by id, this many per CQL query.
ID_BATCH = 25
# Every page's body comes in the same answer; ancestors name its place in the tree.
_FULL_EXPAND = "body.storage,version,ancestors,space"
_LIST_EXPAND = "version,ancestors,space"
_STATE_VERSION = 1

SpaceKey = Annotated[str, Field(pattern=r"^~?[A-Za-z0-9_.@-]+$", max_length=255)]
Audience = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]


class ConfluenceConfig(ConnectorConfig, RetryFields):
    type: Literal["confluence"]
    base_url: str = Field(
        description="Cloud: https://<site>.atlassian.net/wiki; Data Center: the server's "
        "address, e.g. https://confluence.acme.example"
    )
    space_keys: list[SpaceKey] = Field(
        min_length=1,
        max_length=250,
        description="the spaces whose pages are indexed, e.g. [OPS, ENG]",
    )
    labels: list[Annotated[str, Field(min_length=1, max_length=255)]] = Field(
        default_factory=list, description="only pages with at least one of these labels"
    )
    email: str | None = Field(default=None, description="Cloud: the account's email")
    api_token: SecretStr | None = Field(
        default=None, description="Cloud: an Atlassian API token; write ${ENV_VAR}"
    )
    token: SecretStr | None = Field(
        default=None,
        validate_default=True,
        description="Data Center: a personal access token; write ${ENV_VAR}",
    )
    space_audiences: dict[str, Audience] = Field(
        default_factory=dict,
        description="space key -> audience of its pages (default: the connector's audience)",
    )
    page_size: int = Field(default=50, ge=1, le=200, description="results asked for per request")
    timeout_s: float = Field(default=30, gt=0, le=600, description="per HTTP request")

    @field_validator("base_url")
    @classmethod
    def _web_address(cls, v: str) -> str:
        parts = urlsplit(v.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http(s):// address, e.g. https://acme.atlassian.net/wiki")
        if parts.query or parts.fragment:
            raise ValueError("must be the site's address, without ?query or #fragment")
        path = parts.path.rstrip("/")
        if parts.hostname and parts.hostname.endswith(".atlassian.net") and not path:
            path = "/wiki"  # Confluence Cloud lives below /wiki
        return f"{parts.scheme}://{parts.netloc}{path}"

    @field_validator("api_token", "token")
    @classmethod
    def _not_empty(cls, v: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if v is not None and not v.get_secret_value().strip():
            raise ValueError("is empty (is its environment variable set?)")
        return v

    @field_validator("token")
    @classmethod
    def _one_auth_style(cls, v: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if "email" not in info.data or "api_token" not in info.data:
            return v  # one of them was invalid, and is reported on its own
        email, api_token = info.data["email"], info.data["api_token"]
        cloud = email is not None or api_token is not None
        if cloud and v is not None:
            raise ValueError(
                "use either email + api_token (Confluence Cloud) or token (a Data Center "
                "personal access token), not both"
            )
        if not cloud and v is None:
            raise ValueError(
                "set email + api_token (Confluence Cloud) or token (a Data Center personal "
                "access token), from the environment with ${ENV_VAR}"
            )
        if cloud and (email is None or api_token is None):
            raise ValueError("Confluence Cloud needs both email and api_token")
        host = urlsplit(info.data.get("base_url") or "").hostname or ""
        if v is not None and host.endswith(".atlassian.net"):
            raise ValueError("Confluence Cloud (atlassian.net) takes email + api_token, not token")
        return v

    @field_validator("space_audiences")
    @classmethod
    def _known_spaces(cls, v: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        keys = info.data.get("space_keys") or []
        unknown = sorted(set(v) - set(keys))
        if unknown:
            raise ValueError(f"space(s) {unknown} are not in space_keys {keys}")
        return v

    def audiences(self) -> frozenset[str]:
        """The connector's audience and every space's: pages are judged one by one."""
        return frozenset({self.audience, *self.space_audiences.values()})

    @property
    def cloud(self) -> bool:
        """Confluence Cloud (email + API token) rather than Data Center (token)."""
        return self.api_token is not None

    @property
    def credentials(self) -> str:
        """Which credentials to check, named as in the config (never their values)."""
        return "email and api_token" if self.cloud else "token"


@dataclass(frozen=True)
class _Stub:
    """What a listing tells about a page: enough to prune and to notice it moved."""

    id: str
    space: str
    path: tuple[str, ...]  # ancestor titles, then the page's own

    @property
    def signature(self) -> list[str]:
        return [self.space, *self.path]


class _Api:
    """GET requests with retries: timeouts, 429 (honouring Retry-After) and 5xx."""

    def __init__(self, config: ConfluenceConfig):
        self.config = config
        self.root = config.base_url
        self.retry = config.retry_policy()
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        auth: httpx.Auth | None = None
        if config.token is not None:
            headers["Authorization"] = f"Bearer {config.token.get_secret_value()}"
        else:
            assert config.email is not None and config.api_token is not None
            auth = httpx.BasicAuth(config.email, config.api_token.get_secret_value())
        # httpx drops the Authorization header on a redirect to another host.
        self.client = httpx.Client(
            headers=headers, auth=auth, timeout=config.timeout_s, follow_redirects=True
        )

    def fail(self, what: str) -> ConnectorError:
        return ConnectorError(f"Confluence connector {self.config.name!r}: {what}")

    def get(
        self, url: str, params: dict[str, Any] | None = None, *, missing_ok: bool = False
    ) -> Any:
        """The JSON answer to one GET, or None for a 404 when ``missing_ok``."""
        where = urlsplit(url).path
        timeout = self.config.timeout_s

        def attempt() -> Any:
            try:
                r = self.client.get(url, params=params)
            except httpx.TimeoutException:
                raise Retry(f"no answer within {timeout:g}s") from None
            except httpx.TransportError as e:
                raise Retry(f"cannot connect ({type(e).__name__}: {e})") from None
            if r.status_code == 200:
                return self._json(r, where)
            if r.status_code == 404 and missing_ok and _is_json(r):
                return None  # Confluence's own "not found", not a wrong address
            self._raise_for_status(r, where)
            raise Retry(f"HTTP {r.status_code}", retry_after_seconds(r.headers.get("Retry-After")))

        try:
            return self.retry.call(attempt, what=f"confluence {self.config.name}: GET {where}")
        except RetriesExhausted as e:
            raise self.fail(
                f"GET {where} at {self.root} failed after {e.attempts} attempt(s): {e.reason}"
            ) from None

    def _raise_for_status(self, r: httpx.Response, where: str) -> None:
        """Raise for statuses that a retry cannot fix; return for the retryable ones."""
        status = r.status_code
        if status in TRANSIENT_STATUSES:
            return
        detail = server_message(r)
        c = self.config
        if status == 401:
            raise self.fail(
                f"authentication failed at {self.root} (HTTP 401{detail}); check {c.credentials} "
                "in the config and the environment: they may be wrong, expired or revoked"
            )
        if status == 403:
            raise self.fail(
                f"access denied at {self.root} (HTTP 403{detail}); check that {c.credentials} "
                "belong to an account that may read these spaces"
            )
        hint = ""
        if status == 404 and not _is_json(r):
            hint = (
                "; is base_url the Confluence address (Cloud: https://<site>.atlassian.net/wiki)?"
            )
        raise self.fail(f"GET {where} at {self.root} answered HTTP {status}{detail}{hint}")

    def _json(self, r: httpx.Response, where: str) -> dict[str, Any]:
        kind = r.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            data = r.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            # Typically a single-sign-on login page answered with 200.
            raise self.fail(
                f"GET {where} at {self.root} did not answer with a JSON object (got "
                f"{kind or 'no content type'}); is base_url the Confluence address (Cloud: "
                "https://<site>.atlassian.net/wiki)?"
            )
        return data

    def pages(self, path: str, params: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str]]:
        """Every result of a paginated listing, each with the site's base URL for links.

        Follows ``_links.next``: Cloud pages CQL searches with an opaque cursor, Data Center
        with ``start``; neither promises to honour ``limit``.
        """
        url: str | None = self.root + path
        query: dict[str, Any] | None = params
        seen: set[str] = set()
        while url is not None:
            data = self.get(url, query)
            results = data.get("results")
            if not isinstance(results, list):
                raise self.fail(f"GET {path} answered without a 'results' list")
            links = data.get("_links") if isinstance(data.get("_links"), dict) else {}
            base = links.get("base") if isinstance(links.get("base"), str) else self.root
            for item in results:
                if isinstance(item, dict):
                    yield item, base.rstrip("/")
            nxt = links.get("next")
            if not isinstance(nxt, str) or not nxt:
                return
            url, query = self._next_url(nxt), None
            if url in seen:
                raise self.fail(f"GET {path}: the pagination repeats itself at {nxt!r}")
            seen.add(url)

    def _next_url(self, nxt: str) -> str:
        """``_links.next`` is relative to the site's context path (``/wiki`` on Cloud).

        Credentials only ever go to ``base_url``: a link elsewhere is refused.
        """
        if nxt.startswith(("http://", "https://")):
            if not nxt.startswith(self.root + "/"):
                raise self.fail(f"refusing to follow a next link outside base_url: {nxt!r}")
            return nxt
        context = urlsplit(self.root).path
        if context and nxt.startswith(context + "/rest/"):
            nxt = nxt[len(context) :]
        return self.root + "/" + nxt.lstrip("/")

    def close(self) -> None:
        self.client.close()


def _is_json(r: httpx.Response) -> bool:
    return "json" in r.headers.get("Content-Type", "")


def server_message(r: httpx.Response) -> str:
    """``": <message>"`` from a Confluence JSON error body, if there is one (never headers)."""
    try:
        data = r.json()
    except ValueError:
        return ""
    msg = data.get("message") if isinstance(data, dict) else None
    if not isinstance(msg, str) or not msg.strip():
        return ""
    msg = " ".join(msg.split())
    return f": {msg[:200]}"


def cql_string(s: str) -> str:
    """A CQL string literal."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ConfluenceConnector:
    """Reads the configured spaces; one instance serves one sync run."""

    type_name: ClassVar[str] = "confluence"

    def __init__(self, config: ConfluenceConfig, workdir: Path | None = None):
        self.config = config
        self.state_path = state_dir(workdir, self.type_name) / f"{config.name}.json"
        self.problems: list[DocumentError] = []
        self._listing: dict[str, _Stub] | None = None
        self._spaces_checked = False

    # -- the three capabilities -------------------------------------------------------------

    def list_ids(self) -> set[str]:
        with self._api() as api:
            return set(self._list(api))

    def load_all(self) -> Iterator[Document]:
        self.problems = []
        with self._api() as api:
            self._check_spaces(api)
            read: dict[str, list[str]] = {}
            for page, base in self._query(api, _FULL_EXPAND):
                doc = self._read(page, base)
                if doc is not None:
                    read[doc.id] = _stub(page, doc.metadata["space"]).signature
                    yield doc
            # Only after a complete read: an interrupted one must not hide moves next time.
            self._save_state(read)

    def changed_since(self, since: datetime) -> Iterator[Document]:
        self.problems = []
        with self._api() as api:
            listing = self._list(api)
            previous = self._load_state()
            read: dict[str, list[str]] = {}
            tried: set[str] = set()
            since = since if since.tzinfo else since.replace(tzinfo=UTC)
            stamp = (since.astimezone(UTC) - CQL_MARGIN).strftime("%Y-%m-%d %H:%M")
            edited = self._query(api, _FULL_EXPAND, f"lastmodified >= {cql_string(stamp)}")
            for doc, sig, pid in self._read_all(edited):
                tried.add(pid)
                if doc is not None:
                    read[pid] = sig
                    yield doc
            moved = [
                pid
                for pid, stub in listing.items()
                if pid not in tried and previous.get(pid) != stub.signature
            ]
            for doc, sig, pid in self._read_all(self._by_id(api, moved)):
                tried.add(pid)
                if doc is not None:
                    read[pid] = sig
                    yield doc
            failed = {p.doc_id for p in self.problems}
            state = {pid: s.signature for pid, s in listing.items() if pid not in failed}
            self._save_state({**state, **read})

    def load(self, ids: set[str]) -> Iterator[Document]:
        """The pages with these ids that are still in the configured spaces (and labels)."""
        self.problems = []
        # Page ids are numbers; anything else cannot exist (and must not reach the CQL).
        wanted = sorted((i for i in ids if i.isascii() and i.isdigit()), key=int)
        with self._api() as api:
            for page, base in self._by_id(api, wanted):
                doc = self._read(page, base)
                if doc is not None:
                    yield doc

    # -- reading ----------------------------------------------------------------------------

    @contextmanager
    def _api(self) -> Iterator[_Api]:
        api = _Api(self.config)
        try:
            yield api
        finally:
            api.close()

    def _check_spaces(self, api: _Api) -> None:
        """Every configured space must exist and be visible: Confluence answers an empty
        listing for a space it does not know, which would look like every page was deleted.

        Cloud is asked through the v2 spaces endpoint (its v1 space endpoints are deprecated),
        Data Center, which has no v2, through v1.
        """
        if self._spaces_checked:
            return
        keys = self.config.space_keys
        if self.config.cloud:
            params = {"keys": ",".join(keys), "limit": len(keys)}
            answer = api.get(f"{api.root}/api/v2/spaces", params)
            results = answer.get("results")
            found = (
                {r.get("key") for r in results if isinstance(r, dict)}
                if isinstance(results, list)
                else set()
            )
            missing = [k for k in keys if k not in found]
        else:
            missing = [
                k
                for k in keys
                if api.get(f"{api.root}/rest/api/space/{quote(k, safe='~')}", missing_ok=True)
                is None
            ]
        if missing:
            raise api.fail(
                f"space {missing[0]!r} does not exist at {api.root}, or the account cannot see "
                "it; check space_keys and the account's permissions"
            )
        self._spaces_checked = True

    def _list(self, api: _Api) -> dict[str, _Stub]:
        if self._listing is None:
            self._check_spaces(api)
            listing: dict[str, _Stub] = {}
            for page, _ in self._query(api, _LIST_EXPAND):
                pid = page.get("id")
                if isinstance(pid, str | int) and str(pid):
                    listing[str(pid)] = _stub(page, _space_of(page))
                else:
                    log.warning("confluence %s: a listed page has no id", self.config.name)
            self._listing = listing
        return self._listing

    def _query(
        self, api: _Api, expand: str, extra: str | None = None
    ) -> Iterator[tuple[dict[str, Any], str]]:
        """The configured pages (narrowed by the CQL clause ``extra``), with ``expand``."""
        c = self.config
        limit = {"limit": c.page_size, "expand": expand}
        if extra is None and not c.labels and not c.cloud:
            # Data Center's plain listing is the cheapest way through a whole space. Cloud has
            # deprecated it; its CQL search stays.
            for key in c.space_keys:
                params = {"spaceKey": key, "type": "page", "status": "current", **limit}
                for page, base in api.pages("/rest/api/content", params):
                    page.setdefault("space", {"key": key})
                    yield page, base
            return
        clauses = [
            "type = page",
            f"space in ({', '.join(cql_string(k) for k in c.space_keys)})",
        ]
        if c.labels:
            clauses.append(f"label in ({', '.join(cql_string(lb) for lb in c.labels)})")
        if extra:
            clauses.append(extra)
        yield from api.pages("/rest/api/content/search", {"cql": " AND ".join(clauses), **limit})

    def _by_id(self, api: _Api, ids: list[str]) -> Iterator[tuple[dict[str, Any], str]]:
        """These pages, with their bodies, ``ID_BATCH`` ids per CQL query."""
        for i in range(0, len(ids), ID_BATCH):
            batch = ", ".join(ids[i : i + ID_BATCH])
            yield from self._query(api, _FULL_EXPAND, f"id in ({batch})")

    def _read_all(
        self, pages: Iterator[tuple[dict[str, Any], str]]
    ) -> Iterator[tuple[Document | None, list[str], str]]:
        for page, base in pages:
            pid = str(page.get("id") or "")
            doc = self._read(page, base)
            sig = _stub(page, _space_of(page)).signature if doc is not None else []
            yield doc, sig, pid

    def _read(self, page: dict[str, Any], base: str) -> Document | None:
        """``page_document``, with a page that cannot be read recorded in ``problems``."""
        try:
            return page_document(self.config, page, base)
        except DocumentError as e:
            self.problems.append(e)
            return None

    # -- state: each page's place in the tree at the last complete read -----------------------

    def _load_state(self) -> dict[str, list[str]]:
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            log.warning(
                "confluence %s: ignoring unreadable %s (%s)", self.config.name, self.state_path, e
            )
            return {}
        pages = data.get("pages") if isinstance(data, dict) else None
        if not isinstance(pages, dict) or data.get("version") != _STATE_VERSION:
            return {}
        return pages

    def _save_state(self, pages: dict[str, list[str]]) -> None:
        try:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_path.with_name(self.state_path.name + ".tmp")
            tmp.write_text(json.dumps({"version": _STATE_VERSION, "pages": pages}), "utf-8")
            os.replace(tmp, self.state_path)
        except OSError as e:
            # Without it the next sync re-reads every page: slower, never wrong.
            log.warning("confluence %s: cannot save %s (%s)", self.config.name, self.state_path, e)


def _space_of(page: dict[str, Any]) -> str:
    space = page.get("space")
    key = space.get("key") if isinstance(space, dict) else None
    return key if isinstance(key, str) else ""


def _stub(page: dict[str, Any], space: str) -> _Stub:
    ancestors = page.get("ancestors") if isinstance(page.get("ancestors"), list) else []
    titles = [a.get("title") for a in ancestors if isinstance(a, dict)]
    title = page.get("title")
    path = tuple(t for t in [*titles, title] if isinstance(t, str))
    return _Stub(str(page.get("id") or ""), space, path)


def page_document(config: ConfluenceConfig, page: dict[str, Any], base: str) -> Document:
    """One page of a REST API answer (expanded with body.storage, version, ancestors, space)
    as a Document. Raises DocumentError with the reason when the page cannot be read."""
    pid = page.get("id")
    if not isinstance(pid, str | int) or not str(pid):
        raise DocumentError("(no id)", "a page without an id in the API answer, skipped")
    pid = str(pid)
    title = page.get("title")
    if not isinstance(title, str) or not title.strip():
        raise DocumentError(pid, "the page has no title in the API answer, skipped")
    body = page.get("body")
    storage = body.get("storage") if isinstance(body, dict) else None
    xhtml = storage.get("value") if isinstance(storage, dict) else None
    if not isinstance(xhtml, str):
        raise DocumentError(pid, "no storage-format body (body.storage.value) in the API answer")
    if len(xhtml.encode("utf-8")) > MAX_FILE_BYTES:
        raise DocumentError(pid, f"the body is over the {MAX_FILE_BYTES} byte limit, skipped")
    ver = page.get("version")
    when = ver.get("when") if isinstance(ver, dict) else None
    try:
        modified = datetime.fromisoformat(when) if isinstance(when, str) else None
    except ValueError:
        modified = None
    if modified is None:
        raise DocumentError(pid, f"no readable version.when date in the API answer ({when!r})")
    if modified.tzinfo is None:
        modified = modified.replace(tzinfo=UTC)
    try:
        text = storage_to_markdown(xhtml)
    except RecursionError as e:
        raise DocumentError(pid, "the body is nested too deeply to read, skipped") from e
    space = _space_of(page)
    stub = _stub(page, space)
    links = page.get("_links") if isinstance(page.get("_links"), dict) else {}
    webui = links.get("webui")
    if isinstance(webui, str) and webui.startswith("/"):
        url = base + webui
    else:
        url = f"{config.base_url}/pages/viewpage.action?pageId={quote(pid)}"
    number = ver.get("number") if isinstance(ver, dict) else None
    return Document(
        connector=config.name,
        id=pid,
        title=SEP.join(stub.path),
        url=url,
        text=text,
        last_modified=modified.astimezone(UTC),
        audience=config.space_audiences.get(space, config.audience),
        format="markdown",
        metadata={
            "space": space,
            "page_title": title.strip(),
            "title_path": SEP.join(stub.path),
            "version": str(number) if number is not None else "",
        },
    )


# -- storage format (XHTML with ac:/ri: elements) to Markdown ---------------------------------

_ADMONITIONS = {"info": "Info", "note": "Note", "warning": "Warning", "tip": "Tip"}
_LINK_TARGETS = ("ri:page", "ri:blog-post", "ri:attachment", "ri:space", "ri:url", "ri:user")
_TARGET_NAMES = ("ri:content-title", "ri:filename", "ri:space-key", "ri:value")
_DROP = ["ac:image", "ac:emoticon", "ac:placeholder", "ac:parameter", "ac:adf-fallback"]
_BLOCKS = ["ac:layout", "ac:layout-section", "ac:layout-cell", "ac:adf-extension"]


def storage_to_markdown(xhtml: str) -> str:
    """Confluence storage format as Markdown: macros become code blocks, labelled paragraphs
    or their text; links become their text; images, emoticons and macro settings go."""
    soup = BeautifulSoup(xhtml, "html.parser")
    # Innermost first, so a code block inside an expand macro is already converted when the
    # expand macro's body moves up.
    for macro in reversed(soup.find_all(["ac:structured-macro", "ac:macro"])):
        _replace_macro(soup, macro)
    for link in soup.find_all("ac:link"):
        link.replace_with(_link_text(link))
    for task in soup.find_all("ac:task"):
        status = task.find("ac:task-status")
        body = task.find("ac:task-body")
        li = soup.new_tag("li")
        done = status is not None and status.get_text(strip=True) == "complete"
        li.string = ("[x] " if done else "[ ] ") + (body.get_text(" ", strip=True) if body else "")
        task.replace_with(li)
    for tasks in soup.find_all("ac:task-list"):
        tasks.name = "ul"
    for tag in soup.find_all(_DROP):
        tag.decompose()
    for tag in soup.find_all(_BLOCKS):
        tag.name = "div"
    for tag in soup.find_all("time"):
        tag.replace_with(str(tag.get("datetime") or tag.get_text()))
    return html_to_markdown(soup)


def _replace_macro(soup: BeautifulSoup, macro: Tag) -> None:
    name = str(macro.get("ac:name") or "").lower()
    params = {
        str(p.get("ac:name") or ""): p.get_text(" ", strip=True)
        for p in macro.find_all("ac:parameter", recursive=False)
    }
    plain = macro.find("ac:plain-text-body", recursive=False)
    rich = macro.find("ac:rich-text-body", recursive=False)
    if plain is not None:  # code, noformat, ...
        pre = soup.new_tag("pre")
        pre.string = plain.get_text()
        macro.replace_with(pre)
    elif rich is not None:  # info, note, warning, tip, panel, expand, excerpt, ...
        label = " ".join(x for x in (_ADMONITIONS.get(name, ""), params.get("title", "")) if x)
        rich.name, rich.attrs = "div", {}
        if label:
            p = soup.new_tag("p")
            p.string = label if label.endswith(":") else label + ":"
            rich.insert(0, p)
        macro.replace_with(rich)
    elif name == "status" and params.get("title"):
        macro.replace_with(params["title"])
    elif name == "jira" and params.get("key"):
        macro.replace_with(params["key"])
    else:  # toc, children, anchor, ...: navigation, not content
        macro.decompose()


def _link_text(link: Tag) -> str:
    body = link.find(["ac:link-body", "ac:plain-text-link-body"])
    text = body.get_text(" ", strip=True) if body is not None else ""
    if text:
        return text
    target = link.find(_LINK_TARGETS)
    if target is not None:
        for attr in _TARGET_NAMES:
            value = target.get(attr)
            if value:
                return str(value)
    return ""
