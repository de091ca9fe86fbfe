"""The report digest, posted to the local Slack stand-in (``chat.postMessage``, checked for its
token, channel and content) and the local Bot Connector stand-in (a proactive Teams message);
a failing platform does not stop the other; the scheduler's job and ``kbot report
--post-digest`` post it. The query log is seeded through the real web chat API, on SQLite and
on the real PostgreSQL server."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from bot.answer.types import Requester
from bot.cli import cli
from bot.review.digest import digest_jobs, last_fire_time, send_digest
from config.models import DigestConfig, KbotConfig, ReportsConfig
from indexer.scheduler import build_scheduler
from tests.bot import teams_fakes as teams
from tests.bot.fake_slack import BOT_TOKEN, FakeSlack
from tests.bot.review.test_report import Seeded, database_url, seeded
from tests.bot.servers import serve

CHANNEL = "C0LEADS"
CONVERSATION = "19:leads@thread.tacv2"
BASE_URL = "https://kbot.example.test"
# A content gap whose text would notify everyone in the channel if posted as Slack markup.
MENTION_Q = "<!channel> what is the wifi password?"
ENV = {"SLACK_BOT_TOKEN": BOT_TOKEN}
APP_ENV = (
    "MICROSOFT_APP_ID",
    "MICROSOFT_APP_PASSWORD",
    "MICROSOFT_APP_TYPE",
    "MICROSOFT_APP_TENANT_ID",
)


@dataclass
class Places:
    slack: FakeSlack
    teams: teams.Connector


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def kbot(request, tmp_path_factory, embedder, llm) -> Iterator[Seeded]:
    folder = tmp_path_factory.mktemp(f"digest-{request.param}")
    with database_url(request.param, folder) as url, seeded(folder, url, llm) as s:
        answer = s.rt.answering.ask(MENTION_Q, Requester("slack", "C0RANDOM", "U0GUS"))
        assert answer.abstained
        yield s


@pytest.fixture
def places() -> Iterator[Places]:
    fake = FakeSlack()
    with serve(fake.app()) as slack_url, teams.connector() as connector:
        fake.url = slack_url
        yield Places(fake, connector)


def configured(kbot: Seeded, places: Places, **reports: Any) -> KbotConfig:
    """The seeded kbot's config with a digest to both stand-ins."""
    cfg = kbot.rt.config
    digest = {
        "slack_channel": CHANNEL,
        "teams_conversation": CONVERSATION,
        "teams_service_url": places.teams.url,
        **reports.pop("digest", {}),
    }
    slack = cfg.slack.model_copy(update={"api_base_url": places.slack.url + "api/"})
    section = ReportsConfig(base_url=BASE_URL, digest=DigestConfig(**digest), **reports)
    return cfg.model_copy(update={"slack": slack, "reports": section})


def slack_text(places: Places) -> tuple[str, list[dict[str, Any]]]:
    [call] = places.slack.of("chat.postMessage", channel=CHANNEL)
    assert call.token == BOT_TOKEN
    assert call.reply["ok"] is True
    return call.params["text"], call.params["blocks"]


def teams_lines(places: Places) -> tuple[list[str], dict[str, Any]]:
    [msg] = places.teams.messages()
    assert msg.method == "POST" and msg.conversation_id == CONVERSATION
    assert msg.activity_id is None  # a new post in the channel, not a reply
    [attachment] = msg.body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    return [b["text"] for b in card["body"]], card


def test_the_digest_is_posted_to_slack_and_to_teams(kbot: Seeded, places: Places) -> None:
    posted = send_digest(configured(kbot, places), kbot.rt.db, ENV)
    assert posted == {"slack": True, "teams": True}

    text, blocks = slack_text(places)
    assert text.startswith("kbot digest: ")
    for line in (
        "7 questions: 4 answered, 3 abstained (43%)",
        "Feedback: 3 👍, 3 👎 (50% helpful)",
        "Top content gaps (abstained or low confidence):",
        "• “what flour to water ratio makes a good sourdough starter” (asked 2×)",
        "• “&lt;!channel&gt; what is the wifi password?” (asked 1×)",
        "• “Is there a VPN for new engineers?” (asked 1×)",
        "Most 👎 documents:",
        "• Rotating the message queue credentials (1 👎 of 2 cited)",
        "• Build agent disk full (1 👎 of 1 cited)",
        "1 cited document(s) unchanged for over 180 days or gone from the index.",
    ):
        assert line in text.splitlines(), line
    assert any(line.startswith("Model cost: $0.0007 (about $0.0") for line in text.splitlines())
    assert "<!channel>" not in json.dumps(blocks) and "<!channel>" not in text
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": text.splitlines()[0]},
    }
    link = blocks[-1]["elements"][0]["text"]
    assert link == f"<{BASE_URL}/reports?since=7d|Open the full report>"

    lines, card = teams_lines(places)
    assert lines[0] == text.splitlines()[0]
    assert "7 questions: 4 answered, 3 abstained (43%)" in lines
    assert "• “<!channel> what is the wifi password?” (asked 1×)" in lines
    assert card["actions"] == [
        {
            "type": "Action.OpenUrl",
            "title": "Open the full report",
            "url": f"{BASE_URL}/reports?since=7d",
        }
    ]


def test_a_failing_platform_is_logged_and_the_other_still_gets_the_digest(
    kbot: Seeded, places: Places, caplog: pytest.LogCaptureFixture
) -> None:
    places.slack.failures[CHANNEL] = "channel_not_found"
    with caplog.at_level(logging.INFO, logger="bot.review.digest"):
        posted = send_digest(configured(kbot, places), kbot.rt.db, ENV)
    assert posted == {"slack": False, "teams": True}
    assert f"report digest not posted to Slack {CHANNEL}: channel_not_found" in caplog.text
    assert f"report digest posted to Teams {CONVERSATION}" in caplog.text
    assert BOT_TOKEN not in caplog.text
    assert len(places.teams.messages()) == 1


def test_without_the_slack_token_the_log_says_which_variable_to_set(
    kbot: Seeded, places: Places, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = configured(kbot, places, digest={"teams_conversation": None})
    with caplog.at_level(logging.ERROR, logger="bot.review.digest"):
        assert send_digest(cfg, kbot.rt.db, {}) == {"slack": False}
    assert "SLACK_BOT_TOKEN is not set" in caplog.text
    assert places.slack.calls == [] and places.teams.calls == []


def test_the_digest_follows_the_redaction_setting(kbot: Seeded, places: Places) -> None:
    assert send_digest(configured(kbot, places, redact="hash"), kbot.rt.db, ENV)["slack"]
    text, _ = slack_text(places)
    assert "wifi" not in text and "sourdough" not in text
    assert "• “q:" in text


def test_the_scheduler_posts_the_digest_on_its_cron_schedule(kbot: Seeded, places: Places) -> None:
    cfg = configured(kbot, places, digest={"schedule": "30 8 * * 1", "timezone": "Europe/Berlin"})
    kbot.rt.indexer  # noqa: B018 - the scheduler's syncs need the writer; the seeded kbot has it
    scheduler = build_scheduler(
        cfg, kbot.rt.indexer, blocking=False, jobs=digest_jobs(cfg, kbot.rt.db)
    )
    job = scheduler.get_job("digest")
    assert job is not None
    berlin = ZoneInfo("Europe/Berlin")
    wednesday = datetime(2026, 11, 25, 12, 0, tzinfo=berlin)
    assert job.trigger.get_next_fire_time(None, wednesday) == datetime(
        2026, 11, 30, 8, 30, tzinfo=berlin
    )
    # What the scheduler calls when the time comes, with the credentials of the environment.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
        for name in APP_ENV:
            mp.delenv(name, raising=False)
        job.func(*job.args)
    slack_text(places)
    teams_lines(places)

    # The claim's key is the scheduled time, not the moment each worker runs the job.
    utc = ZoneInfo("UTC")
    monday = datetime(2026, 11, 30, 7, 30, tzinfo=utc)  # 08:30 in Berlin
    for late in (timedelta(0), timedelta(minutes=1, seconds=5), timedelta(minutes=59)):
        assert last_fire_time(cfg, monday + late) == monday
    assert last_fire_time(cfg, monday - timedelta(seconds=1)) == monday - timedelta(days=7)
    # A second worker firing the same job does not post it again.
    posted = (len(places.slack.calls), len(places.teams.calls))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
        for name in APP_ENV:
            mp.delenv(name, raising=False)
        job.func(*job.args)
    assert (len(places.slack.calls), len(places.teams.calls)) == posted

    off = kbot.rt.config  # no digest channel
    assert digest_jobs(off, kbot.rt.db) == []


def test_kbot_report_post_digest_posts_it_now(
    kbot: Seeded, places: Places, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = kbot.rt.config.storage.model_dump(mode="json")
    path = tmp_path / "kbot.yaml"
    path.write_text(
        json.dumps(
            {
                "storage": storage,
                "slack": {"api_base_url": places.slack.url + "api/"},
                "reports": {
                    "digest": {
                        "slack_channel": CHANNEL,
                        "teams_conversation": CONVERSATION,
                        "teams_service_url": places.teams.url,
                    }
                },
            }
        )
    )
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    for name in APP_ENV:
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()
    result = runner.invoke(
        cli, ["--config", str(path), "report", "--format", "json", "--post-digest"]
    )
    assert result.exit_code == 0, result.output
    assert "digest posted to slack" in result.output and "digest posted to teams" in result.output
    slack_text(places)
    teams_lines(places)

    bare = tmp_path / "bare.yaml"
    bare.write_text(json.dumps({"storage": storage}))
    refused = runner.invoke(cli, ["--config", str(bare), "report", "--post-digest"])
    assert refused.exit_code == 1
    assert (
        "set reports.digest.slack_channel and/or reports.digest.teams_conversation"
        in refused.output
    )


@pytest.mark.parametrize(
    ("schedule", "first"),
    [
        ("0 9 * * 1", datetime(2026, 11, 30, 9, 0)),  # the default: Mondays at 09:00
        ("0 9 * * 0", datetime(2026, 11, 29, 9, 0)),  # 0 is Sunday, as in crontab
        ("0 9 * * 7", datetime(2026, 11, 29, 9, 0)),  # and so is 7
        ("15 7 * * 4-5", datetime(2026, 11, 26, 7, 15)),
        ("0 18 * * sat", datetime(2026, 11, 28, 18, 0)),
    ],
)
def test_digest_schedules_number_weekdays_as_crontab_does(schedule: str, first: datetime) -> None:
    wednesday = datetime(2026, 11, 25, 12, 0, tzinfo=ZoneInfo("UTC"))
    trigger = DigestConfig(schedule=schedule).trigger()
    assert trigger.get_next_fire_time(None, wednesday) == first.replace(tzinfo=ZoneInfo("UTC"))


@pytest.mark.parametrize("schedule", ["0 9 * *", "0 9 * * 8", "0 9 * * funday", "0 25 * * 1"])
def test_a_bad_digest_schedule_is_refused_with_the_expected_form(schedule: str) -> None:
    with pytest.raises(ValueError, match="is not a 5-field cron line like '0 9 \\* \\* 1'"):
        DigestConfig(schedule=schedule)
