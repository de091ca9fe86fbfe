"""``/reports`` and ``/reports/trace/{query_id}`` on the kbot server, for leads and admins.

Both need the admin token (``Authorization: Bearer``, ``?token=``, or the login form) or the
basic auth user and password from ``reports:`` in the config; a valid token or login sets a
cookie, so the report's links to traces work in a browser. Without either credential the
pages are off (404, saying how to turn them on). Secrets are compared in constant time.

The pages carry no script and load nothing from elsewhere, and a Content-Security-Policy
says so. They render through the autoescaping templates in ``bot/review/templates``, so
questions, reasons and document titles, which are user input, are shown as text.
The trace page applies the same ``reports.redact`` as the report; the full trace stays with
``kbot trace`` on the server.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
from hashlib import sha256
from typing import Any

from aiohttp import web

from bot.review.render import FORMATS, render, render_template, report_context
from bot.review.report import Redactor, ReportError, build_report
from bot.review.trace import HOW, UnknownTrace, adjustment_line, passage_shares, trace
from bot.runtime import Runtime
from config.models import ReportsConfig

log = logging.getLogger(__name__)

REPORTS_RUNTIME = web.AppKey("reports_runtime", Runtime)
COOKIE = "kbot_reports"
COOKIE_MAX_AGE = 12 * 3600
PERIODS = ("7d", "30d", "90d")
DOWNLOADS = ("csv", "json", "md")
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
        body = render_template(
            "report_page.html.j2",
            **report_context(report, lambda qid: f"reports/trace/{qid}"),
            curate_link=lambda qid: f"/reports/curate/{qid}",
            since=since,
            periods=PERIODS,
            downloads=DOWNLOADS,
        )
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
    challenge = 'Basic realm="kbot reports", charset="UTF-8"' if cfg.password else "Bearer"
    return _error(
        web.HTTPUnauthorized,
        "Log in",
        message,
        login_form=cfg.admin_token is not None,
        headers={"WWW-Authenticate": challenge},
    )


def _error(
    cls: type[web.HTTPException],
    title: str,
    message: str,
    *,
    login_form: bool = False,
    headers: dict[str, str] | None = None,
) -> web.HTTPException:
    return cls(
        text=_message(title, message, login_form),
        content_type="text/html",
        headers={**HEADERS, **(headers or {})},
    )


def _page(status: int, title: str, message: str) -> web.Response:
    return web.Response(
        status=status,
        text=_message(title, message),
        content_type="text/html",
        charset="utf-8",
        headers=HEADERS,
    )


def _message(title: str, message: str, login_form: bool = False) -> str:
    return render_template("message.html.j2", title=title, message=message, login_form=login_form)


# -- the trace page ------------------------------------------------------------------


def _passage_rows(passages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per chosen block; a source quoted whole (or cut) is one row saying so."""
    rows: list[dict[str, Any]] = []
    for p in passages:
        how = p.get("how", "chosen")
        if how != "chosen":
            rows.append({"n": p["n"], "score": None, "shares_text": HOW.get(how, how), "block": ""})
        rows += [{**b, "n": p["n"], "shares_text": passage_shares(b)} for b in p["blocks"]]
    return rows


def _thread_rows(th: dict[str, Any] | None, redactor: Redactor) -> dict[str, Any] | None:
    """The thread of a trace for its page, questions redacted like the trace's own."""
    if not th:
        return None

    def redact(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**r, "question": redactor.question(r["question"])} for r in rows]

    standalone = th["standalone_question"]
    return {
        **th,
        "earlier": redact(th["earlier"]),
        "later": redact(th["later"]),
        "standalone_question": redactor.question(standalone) if standalone else None,
    }


def trace_html(t: dict[str, Any], redactor: Redactor) -> str:
    """One answer's trace (``bot.review.trace.trace``) as a page, with ``reports.redact``
    applied to the question (in the prompt too) and to user ids."""
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
    return render_template(
        "trace.html.j2",
        query_id=t["query_id"],
        question=question,
        facts=facts,
        retrieved=[
            {**h, "n": i, "cited": h["chunk_id"] in cited} for i, h in enumerate(t["retrieved"], 1)
        ],
        citations=t["citations"],
        passages=_passage_rows(t["passages"]),
        answer=t["answer"],
        thread=_thread_rows(t.get("thread"), redactor),
        prompt=prompt,
        feedback=[{**f, "user": redactor.user(f["user"])} for f in t["feedback"]],
        adjustments=[adjustment_line(n) for n in t.get("adjustments") or []],
    )
