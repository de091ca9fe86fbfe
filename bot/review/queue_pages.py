"""The reports pages that change things: the review queue (``/reports/review``), picking a
document for a question by searching the index, posting a corrected answer into the
question's Slack thread or Teams conversation (with ``feedback.post_corrections``), and the
curations (``/reports/curations``, with undo). They sit behind the same ``reports:`` auth
as the report (401 without it).

Every POST carries a CSRF token, checked before anything is done (403 without it or with a
wrong one). It is the signed double-submit cookie pattern (OWASP's CSRF cheat sheet): a
random per-browser value in an HttpOnly, SameSite=Strict cookie, and in each form the HMAC
of that value keyed by the reports' session secret (which derives from the configured
secrets, so every web process agrees and changing them voids old forms). A forged form on
another site can send the cookie at most, never the matching token.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import re
import secrets
from hashlib import sha256
from typing import Any

from aiohttp import web
from sqlalchemy import or_, select

from bot.answer.curation import CurationError
from bot.review.corrections import OFF, CorrectionError, Corrections, NotPosted, NotRecorded
from bot.review.pages import (
    HEADERS,
    REPORTS_RUNTIME,
    _authorize,
    _page,
    _same,
    _session,
    _with_cookie,
)
from bot.review.queue import ReviewError, review_queue
from bot.review.render import render_template
from bot.review.report import Redactor
from bot.runtime import Runtime
from config.models import ReportsConfig
from db.models import IndexedDocument, QueryRecord

CSRF_COOKIE = "kbot_csrf"
CSRF_FIELD = "csrf"
_NONCE = re.compile(r"[0-9a-f]{32}")
# Queue rows and search results shown on a page.
SHOWN = 100
RESULTS = 10
DONE = {
    "right": "Marked right.",
    "pinned": "Pinned: the question and its paraphrases are answered from it first.",
    "gap": "Marked a content gap for writers.",
    "dismissed": "Dismissed.",
    "corrected": "Correction posted into the question's conversation.",
    "pin": "Pinned.",
    "suppress": "Suppressed.",
    "removed": "Undone: the curation no longer applies.",
}
REVIEW_OUTCOMES = {"right": "right", "gap": "gap", "dismiss": "dismiss"}


def mount_review(app: web.Application, runtime: Runtime) -> None:
    """Serve the review queue and curation pages from ``app`` (after ``mount_reports``)."""
    app.router.add_get("/reports/review", queue_page)
    app.router.add_post("/reports/review/{query_id}", review_action)
    app.router.add_post("/reports/review/{query_id}/correct", correct_action)
    app.router.add_get("/reports/review/{query_id}/pick", pick_page)
    app.router.add_post("/reports/review/{query_id}/pick", pick_action)
    app.router.add_get("/reports/curate/{query_id}", curate_page)
    app.router.add_post("/reports/curate/{query_id}", curate_action)
    app.router.add_get("/reports/curations", curations_page)
    app.router.add_post("/reports/curations/{curation_id}/remove", remove_action)


# -- CSRF ----------------------------------------------------------------------------------


def _token(cfg: ReportsConfig, nonce: str) -> str:
    return hmac.new(_session(cfg).encode(), b"csrf\0" + nonce.encode(), sha256).hexdigest()


def _nonce(request: web.Request) -> str | None:
    value = request.cookies.get(CSRF_COOKIE)
    return value if value is not None and _NONCE.fullmatch(value) else None


async def _checked_form(request: web.Request, rt: Runtime) -> Any:
    """The POST's form, once its CSRF token matches the browser's cookie; else 403."""
    form = await request.post()
    nonce, given = _nonce(request), form.get(CSRF_FIELD)
    if (
        nonce is None
        or not isinstance(given, str)
        or not _same(given, _token(rt.config.reports, nonce))
    ):
        raise web.HTTPForbidden(
            text=render_template(
                "message.html.j2",
                title="Forbidden",
                message="This form did not come from the reports pages (its CSRF token is "
                "missing or wrong). Open the page again and resubmit.",
                login_form=False,
            ),
            content_type="text/html",
            headers=HEADERS,
        )
    return form


def _html(
    request: web.Request, rt: Runtime, cookie: str | None, template: str, **context: Any
) -> web.StreamResponse:
    """A page with forms: it carries this browser's CSRF token, setting its cookie when new."""
    nonce = _nonce(request)
    new = nonce is None
    nonce = nonce or secrets.token_hex(16)
    body = render_template(template, csrf=_token(rt.config.reports, nonce), **context)
    response = web.Response(text=body, content_type="text/html", charset="utf-8", headers=HEADERS)
    if new:
        response.set_cookie(
            CSRF_COOKIE,
            nonce,
            path="/reports",
            secure=request.secure,
            httponly=True,
            samesite="Strict",
        )
    return _with_cookie(request, response, cookie)


def _reviewer(request: web.Request, cfg: ReportsConfig) -> str:
    """Who acts: the basic auth user when logged in that way, else the admin token's holder."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            user = base64.b64decode(value.strip(), validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            user = ""
        if user and user == cfg.username:
            return user
    return "reports admin"


def _see_other(location: str) -> web.HTTPException:
    return web.HTTPSeeOther(location, headers=HEADERS)


# -- the queue -----------------------------------------------------------------------------


async def queue_page(request: web.Request) -> web.StreamResponse:
    """``GET /reports/review``: what waits for review, with the reviewer's actions."""
    rt = request.app[REPORTS_RUNTIME]
    cookie = _authorize(request, rt)
    items = await asyncio.to_thread(review_queue(rt).items)
    redactor = Redactor.from_config(rt.config)
    corrections = Corrections(rt)
    # Where each row's correction would go (a Destination), or why nowhere (a str).
    where: dict[str, Any] = {}
    if corrections.enabled:
        where = await asyncio.to_thread(
            corrections.destinations, [i.query_id for i in items[:SHOWN]]
        )
    rows = [
        {
            "query_id": i.query_id,
            "question": redactor.question(i.question),
            "why": i.why.replace("_", " "),
            "asked_at": i.asked_at.isoformat(),
            "asked": i.asked,
            "answer": i.answer,
            "abstained": i.abstained,
            "confidence": i.confidence,
            "citations": i.citations,
            "post_to": getattr(where.get(i.query_id), "where", None),
            "no_post": where.get(i.query_id) if isinstance(where.get(i.query_id), str) else None,
        }
        for i in items[:SHOWN]
    ]
    return _html(
        request,
        rt,
        cookie,
        "review.html.j2",
        items=rows,
        total=len(items),
        review_below=rt.config.feedback.review_below,
        corrections=corrections.enabled,
        done=DONE.get(request.query.get("done", "")),
    )


async def review_action(request: web.Request) -> web.StreamResponse:
    """``POST /reports/review/{query_id}`` with ``outcome`` right, gap or dismiss."""
    rt = request.app[REPORTS_RUNTIME]
    _authorize(request, rt)
    form = await _checked_form(request, rt)
    method = REVIEW_OUTCOMES.get(str(form.get("outcome", "")))
    if method is None:
        return _page(400, "Bad request", "outcome must be one of right, gap, dismiss.")
    queue = review_queue(rt)
    by = _reviewer(request, rt.config.reports)
    try:
        done = await asyncio.to_thread(getattr(queue, method), request.match_info["query_id"], by)
    except ReviewError as e:
        return _page(409, "Not in the queue", str(e))
    raise _see_other(f"/reports/review?done={done.outcome}")


async def correct_action(request: web.Request) -> web.StreamResponse:
    """``POST /reports/review/{query_id}/correct`` with ``text`` and optionally ``document``
    (``connector:path``, or ``connector`` and ``path``): post the corrected answer into the
    question's conversation, then record the review. 403 when posting corrections is off;
    502 when the platform refused it or could not be reached (nothing recorded)."""
    rt = request.app[REPORTS_RUNTIME]
    _authorize(request, rt)
    form = await _checked_form(request, rt)
    corrections = Corrections(rt)
    if not corrections.enabled:
        return _page(403, "Corrections are off", OFF)
    connector, _, path = str(form.get("document", "")).partition(":")
    if not connector:
        connector, path = str(form.get("connector", "")), str(form.get("path", ""))
    by = _reviewer(request, rt.config.reports)
    try:
        await corrections.correct(
            request.match_info["query_id"],
            str(form.get("text", "")),
            by,
            connector or None,
            path or None,
        )
    except NotPosted as e:
        return _page(502, "Not posted", str(e))
    except NotRecorded as e:
        return _page(409, "Posted, but not recorded", str(e))
    except CorrectionError as e:
        return _page(400, "Cannot post a correction", str(e))
    except (ReviewError, CurationError) as e:
        return _page(409, "Not in the queue", str(e))
    raise _see_other("/reports/review?done=corrected")


# -- picking a document ----------------------------------------------------------------------


def search_documents(rt: Runtime, text: str, limit: int = RESULTS) -> list[dict[str, Any]]:
    """Indexed documents for ``text``, of every audience (the reports are for admins): those
    whose title or path holds it first, then those whose text is closest in meaning."""
    text = " ".join(text.split())
    if not text:
        return []
    found: dict[tuple[str, str], str] = {}
    with rt.db.session() as s:
        for d in s.scalars(
            select(IndexedDocument)
            .where(
                or_(
                    IndexedDocument.title.icontains(text, autoescape=True),
                    IndexedDocument.doc_id.icontains(text, autoescape=True),
                )
            )
            .order_by(IndexedDocument.title, IndexedDocument.doc_id)
            .limit(limit)
        ):
            found.setdefault((d.connector, d.doc_id), "title or path")
    if len(found) < limit:
        for h in rt.answering.retriever.search(text, limit * 3, rt.all_audiences):
            if len(found) >= limit:
                break
            found.setdefault((h.chunk.connector, h.chunk.doc_id), "text")
    with rt.db.session() as s:
        docs = [(s.get(IndexedDocument, key), how) for key, how in found.items()]
        return [
            {
                "connector": d.connector,
                "path": d.doc_id,
                "title": d.title,
                "url": d.url,
                "audience": d.audience,
                "matched": how,
            }
            for d, how in docs
            if d is not None
        ]


async def _search_context(request: web.Request, rt: Runtime, question: str) -> dict[str, Any]:
    """The search box's query (the question itself at first, unless questions are redacted)
    and its results."""
    redactor = Redactor.from_config(rt.config)
    q = request.query.get("q")
    if q is None:
        q = question if redactor.mode == "none" else ""
    results = await asyncio.to_thread(search_documents, rt, q)
    return {"q": q, "results": results, "question": redactor.question(question)}


async def pick_page(request: web.Request) -> web.StreamResponse:
    """``GET /reports/review/{query_id}/pick[?q=...]``: search the index for the document
    that answers a queued question."""
    rt = request.app[REPORTS_RUNTIME]
    cookie = _authorize(request, rt)
    qid = request.match_info["query_id"]
    try:
        item = await asyncio.to_thread(review_queue(rt).get, qid)
    except ReviewError as e:
        return _page(404, "Not in the queue", str(e))
    return _html(
        request,
        rt,
        cookie,
        "pick.html.j2",
        heading="Pick the document that answers it",
        intro="Picking a document pins it for this question and its close paraphrases, "
        "takes the question out of the queue, and labels its eval case.",
        post_url=f"/reports/review/{qid}/pick",
        actions=[("pick", "Pick")],
        back=("/reports/review", "← review queue"),
        done=None,
        citations=item.citations,
        abstained=item.abstained,
        **await _search_context(request, rt, item.question),
    )


async def pick_action(request: web.Request) -> web.StreamResponse:
    """``POST /reports/review/{query_id}/pick`` with ``connector`` and ``path``."""
    rt = request.app[REPORTS_RUNTIME]
    _authorize(request, rt)
    form = await _checked_form(request, rt)
    queue = review_queue(rt)
    by = _reviewer(request, rt.config.reports)
    connector, path = str(form.get("connector", "")), str(form.get("path", ""))
    try:
        await asyncio.to_thread(queue.pick, request.match_info["query_id"], connector, path, by)
    except (ReviewError, CurationError) as e:
        return _page(400, "Cannot pick it", str(e))
    raise _see_other("/reports/review?done=pinned")


# -- curating from the report -----------------------------------------------------------------


def _query(rt: Runtime, query_id: str) -> QueryRecord | None:
    with rt.db.session() as s:
        q = s.get(QueryRecord, query_id)
        if q is not None:
            s.expunge(q)
        return q


async def curate_page(request: web.Request) -> web.StreamResponse:
    """``GET /reports/curate/{query_id}[?q=...]``: pin or suppress a document for the
    question of a 👎 or content-gap row."""
    rt = request.app[REPORTS_RUNTIME]
    cookie = _authorize(request, rt)
    qid = request.match_info["query_id"]
    q = await asyncio.to_thread(_query, rt, qid)
    if q is None:
        return _page(404, "Not found", "There is no answer with that query id.")
    return _html(
        request,
        rt,
        cookie,
        "pick.html.j2",
        heading="Pin or suppress a document for this question",
        intro="A pin puts the document first for this question and its close paraphrases, "
        "for askers who may see it; a suppression leaves it out of their answers.",
        post_url=f"/reports/curate/{qid}",
        actions=[("pin", "Pin"), ("suppress", "Suppress")],
        back=("/reports", "← report"),
        done=None,
        citations=q.citations,
        abstained=q.abstained,
        **await _search_context(request, rt, q.question),
    )


async def curate_action(request: web.Request) -> web.StreamResponse:
    """``POST /reports/curate/{query_id}`` with ``action`` (pin, suppress), ``connector``
    and ``path``."""
    rt = request.app[REPORTS_RUNTIME]
    _authorize(request, rt)
    form = await _checked_form(request, rt)
    qid = request.match_info["query_id"]
    q = await asyncio.to_thread(_query, rt, qid)
    if q is None:
        return _page(404, "Not found", "There is no answer with that query id.")
    action = str(form.get("action", ""))
    connector, path = str(form.get("connector", "")), str(form.get("path", ""))
    by = _reviewer(request, rt.config.reports)
    try:
        await asyncio.to_thread(
            rt.curations.add, action, q.question, connector, path, by, query_id=qid
        )
    except CurationError as e:
        return _page(400, "Cannot curate it", str(e))
    raise _see_other(f"/reports/curations?done={action}")


# -- the curations ---------------------------------------------------------------------------


async def curations_page(request: web.Request) -> web.StreamResponse:
    """``GET /reports/curations[?all=1]``: pins and suppressions, broken ones marked, each
    with an undo button."""
    rt = request.app[REPORTS_RUNTIME]
    cookie = _authorize(request, rt)
    show_all = request.query.get("all") == "1"
    views = await asyncio.to_thread(rt.curations.list, show_all)
    redactor = Redactor.from_config(rt.config)
    rows = [{**v.as_json(), "question": redactor.question(v.question)} for v in views]
    return _html(
        request,
        rt,
        cookie,
        "curations.html.j2",
        curations=rows,
        show_all=show_all,
        done=DONE.get(request.query.get("done", "")),
    )


async def remove_action(request: web.Request) -> web.StreamResponse:
    """``POST /reports/curations/{curation_id}/remove``: undo a curation."""
    rt = request.app[REPORTS_RUNTIME]
    _authorize(request, rt)
    await _checked_form(request, rt)
    try:
        curation_id = int(request.match_info["curation_id"])
        await asyncio.to_thread(
            rt.curations.remove, curation_id, _reviewer(request, rt.config.reports)
        )
    except (ValueError, CurationError) as e:
        return _page(404, "Not found", str(e))
    raise _see_other("/reports/curations?done=removed")
