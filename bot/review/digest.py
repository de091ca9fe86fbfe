"""The weekly digest: a short summary of the report, posted on ``reports.digest.schedule`` to a
Slack channel (``chat.postMessage``) and/or a Teams channel (a proactive Bot Framework
message), whichever is configured.

It runs as a job of the scheduler that runs the syncs (``kbot serve`` or ``kbot worker``),
with the same credentials as the chat adapters: ``SLACK_BOT_TOKEN`` and the
``MICROSOFT_APP_*`` variables. A platform that fails is logged and does not stop the other.
Question text in it follows ``reports.redact``, as in the report.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

from apscheduler.schedulers.base import BaseScheduler

from bot.review.report import build_report
from config.models import KbotConfig
from db import Database
from db.models import utcnow

log = logging.getLogger(__name__)

GAPS_SHOWN = 3
DOCS_SHOWN = 3
QUESTION_CHARS = 120
RATE_LIMIT_RETRIES = 2


@dataclass(frozen=True)
class Digest:
    """The digest, free of any platform's markup: a title, lines of text, and the report's
    address when ``reports.base_url`` is set. ``quote`` made the user and document text in
    ``lines`` inert for the platform it is posted to."""

    title: str
    lines: list[str]
    url: str | None


def compose(report: dict[str, Any], base_url: str | None, quote: Callable[[str], str]) -> Digest:
    """The digest of ``report``; ``quote`` neutralises text that came from users or documents."""
    p = report["period"]
    lines = [
        f"{report['questions']} questions: {report['answered']} answered, "
        f"{report['abstained']} abstained"
        + (f" ({report['abstained'] / report['questions']:.0%})" if report["questions"] else ""),
        f"Feedback: {report['feedback']['up']} 👍, {report['feedback']['down']} 👎"
        + (
            f" ({report['helpful_rate']:.0%} helpful)" if report["helpful_rate"] is not None else ""
        ),
    ]
    waiting = report.get("review_queue")
    if waiting is not None:
        lines.append(f"{waiting} answer{'' if waiting == 1 else 's'} waiting for review")
    lat = report["latency_ms"]
    if lat["p50"] is not None:
        lines.append(f"Latency: p50 {lat['p50']:.0f} ms, p95 {lat['p95']:.0f} ms")
    if report["tokens"]["model_calls"]:
        lines.append(
            f"Model cost: {_usd(report['cost_usd'])} (about "
            f"{_usd(report['projected_monthly_cost_usd'])} per month)"
        )
    if report["content_gaps"]:
        lines.append("Top content gaps (abstained or low confidence):")
        lines += [
            f"• “{quote(_clip(g['question']))}” (asked {g['asked']}×)"
            for g in report["content_gaps"][:GAPS_SHOWN]
        ]
    worst = sorted(
        (d for d in report["by_document"] if d["down"]), key=lambda d: (-d["down"], d["path"])
    )
    if worst:
        lines.append("Most 👎 documents:")
        lines += [
            f"• {quote(_clip(d['title'] or d['path']))} ({d['down']} 👎 of {d['cited']} cited)"
            for d in worst[:DOCS_SHOWN]
        ]
    if report["stale_documents"]:
        lines.append(
            f"{len(report['stale_documents'])} cited document(s) unchanged for over "
            f"{report['stale_after_days']} days or gone from the index."
        )
    url = f"{base_url.rstrip('/')}/reports?since={p['days']}d" if base_url else None
    title = f"kbot digest: {p['since'][:10]} to {p['until'][:10]}"
    return Digest(title, lines, url)


def send_digest(
    config: KbotConfig, db: Database, env: Mapping[str, str] | None = None
) -> dict[str, bool]:
    """Build the report over ``reports.digest.since`` and post its digest; per platform
    configured, whether it was posted."""
    env = os.environ if env is None else env
    cfg = config.reports.digest
    report = build_report(db, config, cfg.since)
    posted: dict[str, bool] = {}
    if cfg.slack_channel:
        posted["slack"] = _post_slack(config, report, env)
    if cfg.teams_conversation:
        posted["teams"] = asyncio.run(_post_teams(config, report, env))
    return posted


def digest_jobs(config: KbotConfig, db: Database) -> list[Callable[[BaseScheduler], None]]:
    """The digest's job for ``indexer.scheduler.build_scheduler``: none without a channel."""
    if not config.reports.digest.enabled:
        return []
    return [functools.partial(schedule_digest, config=config, db=db)]


def schedule_digest(scheduler: BaseScheduler, config: KbotConfig, db: Database) -> None:
    """Add the digest job to ``scheduler`` (only call it when the digest has a channel)."""
    cfg = config.reports.digest
    key = str(config.storage.data_dir)
    _SCHEDULED[key] = (config, db)
    scheduler.add_job(
        run_scheduled,
        trigger=cfg.trigger(),
        args=[key],
        id="digest",
        name="report digest",
        replace_existing=True,
    )
    log.info("report digest scheduled at %r (%s)", cfg.schedule, cfg.timezone)


# What a stored digest job posts with, by data directory: a job in the worker's database
# job store names only its function and a string (indexer.scheduler).
_SCHEDULED: dict[str, tuple[KbotConfig, Database]] = {}


def last_fire_time(config: KbotConfig, now: datetime) -> datetime:
    """The digest's scheduled time at or before ``now``: the same for every worker that
    runs the job, however late each one starts it (within the week looked back)."""
    trigger = config.reports.digest.trigger()
    found = now
    fire = trigger.get_next_fire_time(None, now - timedelta(days=8))
    for _ in range(20_000):  # bounded: a cron line that fires every minute
        if fire is None or fire > now:
            break
        found = fire
        fire = trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
    return found


def run_scheduled(key: str) -> None:
    """The scheduled digest of the config registered under ``key``."""
    if key not in _SCHEDULED:
        log.error("report digest not posted: no config for %s in this process", key)
        return
    config, db = _SCHEDULED[key]
    # Two workers on one database (one by mistake) both fire the job; the first to claim
    # the digest of this fire time in SQL posts it.
    from bot.chat.deliveries import Deliveries

    due = last_fire_time(config, utcnow()).isoformat(timespec="minutes")
    if not Deliveries(db).claim("digest", f"{key}:{due}"):
        log.info("report digest of %s skipped: another worker posted it", due)
        return
    try:
        posted = send_digest(config, db)
    except Exception:
        log.exception("the report digest could not be built")
        return
    log.info(
        "report digest: %s",
        ", ".join(f"{k} {'posted' if v else 'FAILED'}" for k, v in posted.items()),
    )


# -- Slack ------------------------------------------------------------------------------


def _post_slack(config: KbotConfig, report: dict[str, Any], env: Mapping[str, str]) -> bool:
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError, SlackClientError
    from slack_sdk.http_retry.builtin_handlers import (
        ConnectionErrorRetryHandler,
        RateLimitErrorRetryHandler,
    )

    from bot.chat.slack_blocks import escape

    channel = config.reports.digest.slack_channel
    token = env.get("SLACK_BOT_TOKEN")
    if not token:
        log.error("report digest not posted to Slack %s: SLACK_BOT_TOKEN is not set", channel)
        return False
    d = compose(report, config.reports.base_url, escape)
    text = "\n".join(d.lines)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": d.title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}},
    ]
    if d.url:
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"<{escape(d.url)}|Open the full report>"}],
            }
        )
    client = WebClient(
        token=token,
        base_url=config.slack.api_base_url,
        logger=log,
        retry_handlers=[
            ConnectionErrorRetryHandler(),
            RateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),
        ],
    )
    try:
        client.chat_postMessage(
            channel=channel,
            text=f"{d.title}\n{text}",
            blocks=blocks,
            unfurl_links=False,
            unfurl_media=False,
        )
    except SlackApiError as e:
        error = e.response.get("error") if e.response is not None else None
        log.error("report digest not posted to Slack %s: %s", channel, error or e)
        return False
    except (SlackClientError, OSError) as e:
        log.error("report digest not posted to Slack %s: %s", channel, e)
        return False
    log.info("report digest posted to Slack %s", channel)
    return True


# -- Teams ------------------------------------------------------------------------------


async def _post_teams(config: KbotConfig, report: dict[str, Any], env: Mapping[str, str]) -> bool:
    from botbuilder.core import BotAdapter, CardFactory, TurnContext
    from botbuilder.integration.aiohttp import (
        CloudAdapter,
        ConfigurationBotFrameworkAuthentication,
    )
    from botbuilder.schema import (
        Activity,
        ActivityTypes,
        ChannelAccount,
        ConversationAccount,
        ConversationReference,
    )

    from bot.chat.teams import TeamsCredentials
    from config.loader import ConfigError

    cfg = config.reports.digest
    where = cfg.teams_conversation
    try:
        creds = TeamsCredentials.from_env(env)
    except ConfigError as e:
        log.error("report digest not posted to Teams %s: %s", where, e)
        return False
    settings = SimpleNamespace(
        APP_ID=creds.app_id or None, APP_PASSWORD=creds.password or None, APP_TYPE=creds.app_type
    )
    if creds.tenant_id:
        settings.APP_TENANTID = creds.tenant_id
    adapter = CloudAdapter(ConfigurationBotFrameworkAuthentication(settings))
    d = compose(report, config.reports.base_url, _inert)
    card: dict[str, Any] = {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": "1.5",
        "body": [
            {
                "type": "TextBlock",
                "text": d.title,
                "weight": "Bolder",
                "size": "Medium",
                "wrap": True,
            },
            *(
                {"type": "TextBlock", "text": line, "wrap": True, "spacing": "Small"}
                for line in d.lines
            ),
        ],
    }
    if d.url:
        card["actions"] = [
            {"type": "Action.OpenUrl", "title": "Open the full report", "url": d.url}
        ]
    activity = Activity(
        type=ActivityTypes.message,
        from_property=ChannelAccount(id=creds.app_id or "kbot"),
        conversation=ConversationAccount(id=where),
        summary=d.title,
        attachments=[CardFactory.adaptive_card(card)],
    )
    reference = ConversationReference(
        channel_id="msteams",
        service_url=cfg.teams_service_url,
        conversation=ConversationAccount(id=where),
        bot=ChannelAccount(id=creds.app_id or "kbot"),
    )
    sent: list[Any] = []

    async def post(context: TurnContext) -> None:
        # A new post in the conversation (POST .../activities), not a reply to the
        # continuation event that botbuilder makes up for a proactive turn.
        client = context.turn_state.get(BotAdapter.BOT_CONNECTOR_CLIENT_KEY)
        sent.append(await client.conversations.send_to_conversation(where, activity))

    try:
        await adapter.continue_conversation(reference, post, creds.app_id or None)
    except Exception as e:
        # msrest's errors name the service URL at most; never a credential.
        log.error("report digest not posted to Teams %s: %s: %s", where, type(e).__name__, e)
        return False
    log.info("report digest posted to Teams %s", where)
    return bool(sent)


def _inert(text: str) -> str:
    """Text safe in a Teams TextBlock: its Markdown could make a link or a heading."""
    return re.sub(r"[\[\]]", lambda m: "(" if m.group() == "[" else ")", text).replace("\n", " ")


def _clip(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= QUESTION_CHARS else flat[: QUESTION_CHARS - 1] + "…"


def _usd(v: float) -> str:
    return f"${v:,.2f}" if v >= 1 else f"${v:.4f}"
