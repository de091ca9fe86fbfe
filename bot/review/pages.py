"""``/reports`` and ``/reports/trace/{query_id}`` on the kbot server, for leads and admins.

Both need the admin token (``Authorization: Bearer``, ``?token=``, or the login form) or the
basic auth user and password from ``reports:`` in the config; a valid token or login sets a
cookie, so the report's links to traces work in a browser. Without either credential the
pages are off (404, saying how to turn them on). Secrets are compared in constant time.

The pages carry no script and load nothing from elsewhere, and a Content-Security-Policy
says so: questions, reasons and document titles are user input, and are escaped besides.
The trace page applies the same ``reports.redact`` as the report; the full trace stays with
``kbot trace`` on the server.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import html
import logging
from hashlib import sha256
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from bot.review.report import FORMATS, Redactor, ReportError, build_report, render, to_html
from bot.review.trace import UnknownTrace, trace
from bot.runtime import Runtime
from config.models import ReportsConfig

log = logging.getLogger(__name__)

REPORTS_RUNTIME = web.AppKey("reports_runtime", Runtime)
COOKIE = "kbot_reports"
COOKIE_MAX_AGE = 12 * 3600
PERIODS = ("7d", "30d", "90d")
CONTENT_TYPES = {
    "html": "text/html",
    "md": "text/markdown",
    "csv": "text/csv",
    "json": "application/json",
}
HEADERS = {
    "Cache-Control": "no-store",
    # The token may be in the address; nothing the page links to may learn it.
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}


def mount_reports(app: web.Application, runtime: Runtime) -> None:
    """Serve the report and trace pages from ``app``."""
    app[REPORTS_RUNTIME] = runtime
    app.router.add_get("/reports", reports_page)
    app.router.add_post("/reports/login", login)
    app.router.add_get("/reports/trace/{query_id}", trace_page)
    if not runtime.config.reports.enabled:
        log.info("the /reports page is off: set reports.admin_token or reports.username/password")


async def reports_page(request: web.Request) -> web.StreamResponse:
    """``GET /reports[?since=7d][&format=html|md|csv|json]``."""
    rt = request.app[REPORTS_RUNTIME]
    cookie = _authorize(request, rt)
    since = request.query.get("since", "7d")
    fmt = request.query.get("format", "html")
    if fmt not in FORMATS:
        return _page(400, "Bad request", f"format must be one of {', '.join(FORMATS)}.")
    try:
        report = await asyncio.to_thread(build_report, rt.db, rt.config, since)
    except ReportError as e:
        return _page(400, "Bad request", f"since: {e}")
    if fmt == "html":
        body = to_html(report, lambda qid: f"reports/trace/{qid}", _nav(since))
    else:
        body = render(report, fmt)
    response = web.Response(
        text=body, content_type=CONTENT_TYPES[fmt], charset="utf-8", headers=HEADERS
    )
    if fmt != "html":
        response.headers["Content-Disposition"] = f'inline; filename="kbot-report.{fmt}"'
    return _with_cookie(request, response, cookie)


async def trace_page(request: web.Request) -> web.StreamResponse:
    """``GET /reports/trace/{query_id}``: what ``kbot trace`` shows, as a page."""
    rt = request.app[REPORTS_RUNTIME]
    cookie = _authorize(request, rt)
    query_id = request.match_info["query_id"]
    try:
        t = await asyncio.to_thread(trace, rt.db, query_id)
    except UnknownTrace:
        return _page(404, "Not found", "There is no answer with that query id.")
    body = trace_html(t, Redactor.from_config(rt.config))
    response = web.Response(text=body, content_type="text/html", charset="utf-8", headers=HEADERS)
    return _with_cookie(request, response, cookie)


async def login(request: web.Request) -> web.StreamResponse:
    """``POST /reports/login`` with the form field ``token``: sets the cookie."""
    rt = request.app[REPORTS_RUNTIME]
    cfg = rt.config.reports
    if not cfg.enabled:
        raise _off(rt)
    form = await request.post()
    token = form.get("token")
    if (
        cfg.admin_token is None
        or not isinstance(token, str)
        or not _same(token, cfg.admin_token.get_secret_value())
    ):
        raise _unauthorized(cfg, "That token is not the admin token.")
    response = web.Response(status=303, headers={**HEADERS, "Location": "/reports"})
    return _with_cookie(request, response, _session(cfg))


# -- authorization --------------------------------------------------------------------


def _authorize(request: web.Request, rt: Runtime) -> str | None:
    """Let the request through, or raise the page that says why not. Returns the cookie to
    set when the request logged in with a credential rather than the cookie."""
    cfg = rt.config.reports
    if not cfg.enabled:
        raise _off(rt)
    token = cfg.admin_token.get_secret_value() if cfg.admin_token else None
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if header:
        if scheme.lower() == "bearer" and token is not None and _same(value.strip(), token):
            return None
        if scheme.lower() == "basic" and _basic_ok(value.strip(), cfg):
            return None
        raise _unauthorized(cfg, "Those credentials are not valid for the reports.")
    if "token" in request.query:
        if token is not None and _same(request.query["token"], token):
            return _session(cfg)
        raise _unauthorized(cfg, "That token is not the admin token.")
    cookie = request.cookies.get(COOKIE)
    if cookie is not None and _same(cookie, _session(cfg)):
        return None
    raise _unauthorized(cfg, "The reports need the admin token or a login.")


def _basic_ok(value: str, cfg: ReportsConfig) -> bool:
    if cfg.username is None or cfg.password is None:
        return False
    try:
        user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    # Both compared, always, so the time taken does not tell which one was wrong.
    user_ok = _same(user, cfg.username)
    password_ok = _same(password, cfg.password.get_secret_value())
    return bool(sep) and user_ok and password_ok


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _session(cfg: ReportsConfig) -> str:
    """The cookie's value: derived from the configured secrets, so changing them logs
    everyone out, and the cookie never holds a secret itself."""
    secret = (
        "\0".join(s.get_secret_value() if s else "" for s in (cfg.admin_token, cfg.password))
        + "\0"
        + (cfg.username or "")
    )
    return hmac.new(secret.encode(), b"kbot reports session", sha256).hexdigest()


def _with_cookie(
    request: web.Request, response: web.StreamResponse, cookie: str | None
) -> web.StreamResponse:
    if cookie is not None:
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=COOKIE_MAX_AGE,
            path="/reports",
            secure=request.secure,
            httponly=True,
            samesite="Strict",
        )
    return response


def _off(rt: Runtime) -> web.HTTPException:
    return _error(
        web.HTTPNotFound,
        "Reports are off",
        "The reports page is off. To turn it on, set reports.admin_token (write ${ENV_VAR}) "
        f"or reports.username and reports.password in {rt.config.source}, and restart kbot "
        "serve.",
    )


def _unauthorized(cfg: ReportsConfig, message: str) -> web.HTTPException:
    form = ""
    if cfg.admin_token is not None:
        form = (
            '<form method="post" action="/reports/login"><label>Admin token '
            '<input type="password" name="token" autocomplete="current-password" required>'
            "</label> <button>Open the report</button></form>"
        )
    challenge = 'Basic realm="kbot reports", charset="UTF-8"' if cfg.password else "Bearer"
    return _error(
        web.HTTPUnauthorized, "Log in", message, form, headers={"WWW-Authenticate": challenge}
    )


def _error(
    cls: type[web.HTTPException],
    title: str,
    message: str,
    extra: str = "",
    headers: dict[str, str] | None = None,
) -> web.HTTPException:
    return cls(
        text=_document(title, f"<h1>{_h(title)}</h1><p>{_h(message)}</p>{extra}"),
        content_type="text/html",
        headers={**HEADERS, **(headers or {})},
    )


def _page(status: int, title: str, message: str) -> web.Response:
    body = _document(title, f"<h1>{_h(title)}</h1><p>{_h(message)}</p>")
    return web.Response(
        status=status, text=body, content_type="text/html", charset="utf-8", headers=HEADERS
    )


def _nav(since: str) -> str:
    links = [
        f'<a href="?{urlencode({"since": p})}"{" aria-current=page" if p == since else ""}>'
        f"last {p}</a>"
        for p in PERIODS
    ]
    links += [
        f'<a href="?{urlencode({"since": since, "format": f})}">{f.upper()}</a>'
        for f in ("csv", "json", "md")
    ]
    return f'<nav aria-label="Period and downloads">{"".join(links)}</nav>'


# -- the trace page ------------------------------------------------------------------


def trace_html(t: dict[str, Any], redactor: Redactor) -> str:
    """One answer's trace (``bot.review.trace.trace``) as a page; everything in it is escaped."""
    e = _h
    r = t["requester"]
    question = redactor.question(t["question"])
    prompt = t["prompt"]
    if prompt and redactor.mode != "none":
        prompt = prompt.replace(t["question"], question)
    cited = {c.get("chunk_id") for c in t["citations"]}
    u = t["usage"]
    outcome = "abstained" if t["abstained"] else (t["mode"] or "extractive")
    facts = [
        ("query id", t["query_id"]),
        ("asked", f"{t['created_at']:%Y-%m-%d %H:%M:%S} UTC"),
        (
            "requester",
            f"{r['platform']} in {r['channel'] or '-'} by "
            f"{redactor.user(r['user']) or 'anonymous'}",
        ),
        (
            "outcome",
            outcome + (f" (fallback: {t['fallback_reason']})" if t["fallback_reason"] else ""),
        ),
        ("latency ms", ", ".join(f"{k} {v}" for k, v in t["latency_ms"].items())),
    ]
    if t["model"]:
        cost = "unknown" if u["cost_usd"] is None else f"${u['cost_usd']:.6f}"
        facts += [
            ("model", t["model"]),
            (
                "tokens",
                f"in {u['input_tokens']} (cached {u['cached_tokens']}), out {u['output_tokens']}",
            ),
            ("cost", cost),
        ]
    rows = "".join(
        f"<tr><td>{'cited' if h['chunk_id'] in cited else ''}</td><td class=n>{i}</td>"
        f"<td class=n>{h['score']:.3f}</td><td class=n>{h.get('dense', 0):.3f}</td>"
        f"<td class=n>{h.get('lexical', 0):.2f}</td><td>{e(h['connector'])}</td>"
        f"<td>{e(h['path'])}</td></tr>"
        for i, h in enumerate(t["retrieved"], 1)
    )
    votes = "".join(
        f"<li>{e(f['vote'])} by {e(redactor.user(f['user']) or 'anonymous')}"
        + (f": {e(f['reason'])}" if f["reason"] else "")
        + "</li>"
        for f in t["feedback"]
    )
    citations = "".join(
        f"<li>[{e(c['n'])}] {e(c['title'])} ({e(c['connector'])}: {e(c['path'])})</li>"
        for c in t["citations"]
    )
    body = [
        '<p><a href="../../reports">← report</a></p>',
        "<h1>Trace</h1>",
        f"<p class=question>{e(question)}</p>",
        "<table class=facts>"
        + "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in facts)
        + "</table>",
        "<h2>Retrieved</h2>",
        "<table><thead><tr><th></th><th>#</th><th>score</th><th>dense</th><th>lexical</th>"
        f"<th>connector</th><th>document</th></tr></thead><tbody>{rows}</tbody></table>"
        if rows
        else "<p>Nothing was retrieved.</p>",
        "<h2>Citations</h2>",
        f"<ol class=plain>{citations}</ol>" if citations else "<p>None.</p>",
        "<h2>Answer</h2>",
        f"<pre>{e(t['answer'])}</pre>",
    ]
    if prompt:
        body += ["<h2>Prompt</h2>", f"<pre>{e(prompt)}</pre>"]
    body += ["<h2>Feedback</h2>", f"<ul>{votes}</ul>" if votes else "<p>None.</p>"]
    return _document(f"kbot trace {t['query_id']}", "".join(body))


_PAGE_CSS = (
    "body{font:15px/1.45 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}"
    "main{max-width:1000px;margin:0 auto;padding:24px}table{border-collapse:collapse;"
    "background:#fff;width:100%}th,td{border:1px solid #dde1e8;padding:4px 8px;text-align:left;"
    "vertical-align:top}td.n{text-align:right}pre{white-space:pre-wrap;background:#fff;"
    "border:1px solid #dde1e8;padding:8px}.question{font-size:18px;font-weight:600}"
    "ol.plain{list-style:none;padding:0}"
)


def _document(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_h(title)}</title><style>{_PAGE_CSS}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )


def _h(value: Any) -> str:
    return html.escape(str(value), quote=True)
