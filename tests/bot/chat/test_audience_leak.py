"""Audience leak (issue 16): every dev question, asked from outside each restricted audience
over the CLI, the web API, Slack and Teams, retrieves, cites and quotes no restricted chunk,
abstentions ("closest sources") included.

The restricted content is the dev questions' own relevant documents, copied from the shared
corpus into two folders whose connectors have the audiences ``sre`` and ``finance``
(alternating by document), so it would surely surface if the audience rule leaked; the
bundled sample knowledge is the public content. A positive control asks as members of each
audience and finds the restricted documents, and the same count over members' answers on
each surface finds every kind of leak, so the zero outside is meaningful.

Each surface is driven through its real entry point: ``kbot ask --json`` through click's
runner, HTTP to ``/api/ask``, signed ``app_mention`` events in a Slack channel mapped to no
audience (replies read from the Slack stand-in), and Bot Framework activities in a Teams
channel mapped to none (replies read from the Bot Connector stand-in). All 60 questions go
through every surface.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import time
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import select

from bot.answer.service import ABSTAIN_TEXT
from bot.answer.types import Requester
from bot.chat.slack import mount
from bot.cli import cli
from bot.review.evaluation import Question, load_questions
from bot.runtime import Runtime
from bot.server import create_app
from config import parse_config
from db.models import QueryRecord
from tests.bot import teams_fakes as teams
from tests.bot.fake_slack import (
    BOT_TOKEN,
    SIGNING_SECRET,
    FakeSlack,
    Loop,
    event_callback,
    mention,
    serving,
    signed_headers,
)
from tests.bot.servers import send
from tests.conftest import CORPUS, DEV_QUESTIONS, REPO, need

AUDIENCES = {"sre": "restricted-sre", "finance": "restricted-finance"}  # audience -> connector
RESTRICTED = set(AUDIENCES.values())
HOSTS = {name: f"https://{name}.example.test/{{path}}" for name in RESTRICTED}
# A window this many words long, shared with a restricted document and with no public text,
# the questions or kbot's own wording, can only be a quote of the restricted document.
SHINGLE = 10
SLACK_OPEN, SLACK_SRE, SLACK_FIN = "C0OPENLEAK", "C0SRELEAK", "C0FINLEAK"
TEAMS_OPEN, TEAMS_TEAM = "19:open-leak@thread.tacv2", "19:everyone-leak@thread.tacv2"
TEAMS_SRE, TEAMS_FIN = "19:sre-leak@thread.tacv2", "19:finance-leak@thread.tacv2"
ROOTS = itertools.count(1)
SLACK_ENV = {"SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_BOT_TOKEN": BOT_TOKEN}
TEAMS_APP_ENV = (
    "MICROSOFT_APP_ID",
    "MICROSOFT_APP_PASSWORD",
    "MICROSOFT_APP_TYPE",
    "MICROSOFT_APP_TENANT_ID",
)


def words(text: str) -> list[str]:
    """Lower-case word tokens: Markdown, mrkdwn and card markup fall away."""
    return re.findall(r"[a-z0-9]+", text.lower())


def shingles(text: str) -> set[tuple[str, ...]]:
    w = words(text)
    return {tuple(w[i : i + SHINGLE]) for i in range(len(w) - SHINGLE + 1)}


def strings(value: Any) -> Iterator[str]:
    """Every string in a JSON value: what a person may read in a message or response."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


@dataclass
class Leaks:
    """Restricted chunks one surface let through, by kind, over the questions it was asked."""

    asked: int = 0
    abstained: int = 0
    retrieved: list[str] = field(default_factory=list)
    cited: list[str] = field(default_factory=list)
    quoted: list[str] = field(default_factory=list)

    def total(self) -> int:
        return len(self.retrieved) + len(self.cited) + len(self.quoted)


@dataclass
class Bench:
    rt: Runtime
    questions: list[Question]
    audience_of: dict[str, str]  # relevant document -> the audience its copy went to
    restricted_chunks: int
    secret: set[tuple[str, ...]]  # word windows found only in restricted documents
    config_file: Path
    url: str
    loop: Loop
    slack_fake: FakeSlack
    slack_adapter: Any
    connector: teams.Connector

    def record(self, query_id: str) -> QueryRecord:
        with self.rt.db.session() as s:
            row = s.get(QueryRecord, query_id)
            assert row is not None, query_id
            s.expunge(row)
            return row

    def judge(self, leaks: Leaks, qid: str, query_id: str, shown: Iterable[str]) -> None:
        """Count what ``query_id``'s answer retrieved and cited (its query log row) and what
        the person was shown (``shown``) of the restricted documents."""
        leaks.asked += 1
        row = self.record(query_id)
        leaks.abstained += row.abstained
        leaks.retrieved += [
            f"{qid}: {r['path']}" for r in row.retrieved if r["connector"] in RESTRICTED
        ]
        leaks.cited += [
            f"{qid}: {c['path']}" for c in row.citations if c["connector"] in RESTRICTED
        ]
        text = "\n".join(shown)
        leaks.cited += [f"{qid}: names {n}" for n in RESTRICTED if n in text]
        leaks.cited += [f"{qid}: links {n}" for n in RESTRICTED if f"{n}.example.test" in text]
        quoted = shingles(text) & self.secret
        if quoted:
            leaks.quoted.append(f"{qid}: {' '.join(sorted(quoted)[0])}")


def corpus_questions() -> list[Question]:
    need(CORPUS.is_dir(), f"the shared corpus is missing at {CORPUS}")
    need(DEV_QUESTIONS.is_file(), f"the labeled questions are missing at {DEV_QUESTIONS}")
    return load_questions(DEV_QUESTIONS)


@pytest.fixture(scope="module")
def bench(tmp_path_factory, embedder) -> Iterator[Bench]:
    """The restricted copies and the public sample knowledge, synced once; one kbot app
    serving the web API, Slack and Teams over it, and a config file for ``kbot ask``."""
    questions = corpus_questions()
    tmp = tmp_path_factory.mktemp("audience-leak")
    documents = sorted({d for q in questions for d in q.relevant})
    audience_of = {d: ("sre", "finance")[i % 2] for i, d in enumerate(documents)}
    for doc, audience in audience_of.items():
        target = tmp / audience / doc
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(CORPUS / doc, target)
    connectors: list[dict[str, Any]] = [
        {"name": "sample", "type": "filesystem", "path": str(REPO / "knowledge")}
    ]
    for audience, name in AUDIENCES.items():
        connectors.append(
            {
                "name": name,
                "type": "filesystem",
                "path": str(tmp / audience),
                "url_template": HOSTS[name],
                "audience": audience,
            }
        )
    loop = Loop()
    slack_fake = FakeSlack()
    try:
        with (
            serving(loop, slack_fake.app()) as slack_url,
            teams.connector() as connector,
            pytest.MonkeyPatch.context() as mp,
        ):
            slack_fake.url = slack_url
            data = {
                "storage": {"data_dir": str(tmp / "data")},
                "connectors": connectors,
                "slack": {
                    "api_base_url": slack_url + "api/",
                    "channels": {SLACK_SRE: ["sre"], SLACK_FIN: ["finance"]},
                },
                "teams": {
                    "channels": {TEAMS_SRE: ["sre"], TEAMS_FIN: ["finance"]},
                    "working_after_s": 10,
                },
                # Hundreds of questions from a few users within a minute.
                "rate_limits": {"per_user": None, "per_channel": None},
            }
            config_file = tmp / "kbot.yaml"
            config_file.write_text(yaml.safe_dump(data), encoding="utf-8")
            rt = Runtime(parse_config(data, source=str(config_file), base_dir=tmp))
            try:
                results = rt.indexer.sync()
                assert all(r.ok for r in results), [r.error for r in results]
                chunks = list(rt.store.all_chunks())
                restricted = [c for c in chunks if c.connector in RESTRICTED]
                secret = set().union(
                    *(shingles((tmp / a / d).read_text()) for d, a in audience_of.items())
                )
                public = [c.text for c in chunks if c.connector not in RESTRICTED]
                public += [
                    p.read_text(errors="replace")
                    for p in (REPO / "knowledge").rglob("*")
                    if p.is_file()
                ]
                public += [q.question for q in questions] + [ABSTAIN_TEXT]
                for text in public:
                    secret -= shingles(text)
                for name in TEAMS_APP_ENV:  # emulator mode: activities are not authenticated
                    mp.delenv(name, raising=False)
                app = create_app(rt)
                adapter = mount(app, rt, env=SLACK_ENV)
                assert adapter is not None
                with serving(loop, app) as url:
                    yield Bench(
                        rt,
                        questions,
                        audience_of,
                        len(restricted),
                        secret,
                        config_file,
                        url,
                        loop,
                        slack_fake,
                        adapter,
                        connector,
                    )
            finally:
                rt.close()
    finally:
        loop.close()


# -- the surfaces, each asked one question from outside every restricted audience -----------


def ask_cli(bench: Bench, question: str, *audiences: str) -> tuple[str, list[str]]:
    args = ["--config", str(bench.config_file), "ask", "--json"]
    args += [a for name in audiences for a in ("--audience", name)]
    result = CliRunner().invoke(cli, [*args, question], prog_name="kbot")
    assert result.exit_code == 0, (result.output, result.exception)
    data = json.loads(result.stdout)
    return data["query_id"], [result.stdout, *strings(data)]


def ask_web(bench: Bench, question: str, i: int) -> tuple[str, list[str]]:
    body = json.dumps({"question": question, "user": f"web-leak-{i}"}).encode()
    req = urllib.request.Request(
        bench.url + "api/ask", data=body, headers={"Content-Type": "application/json"}
    )
    reply = send(req)
    assert reply.status == 200, reply.body
    data = reply.json()
    return data["query_id"], list(strings(data))


def ask_slack(bench: Bench, question: str, channel: str) -> tuple[str, list[str]]:
    event = mention(question, channel)
    body = json.dumps(event_callback(event))
    req = urllib.request.Request(
        bench.url + "slack/events", data=body.encode(), headers=signed_headers(body)
    )
    assert send(req).status == 200
    bench.loop.run(bench.slack_adapter.drain())
    [call] = bench.slack_fake.of("chat.postMessage", channel=channel, thread_ts=event["ts"])
    [actions] = [b for b in call.params["blocks"] if b.get("block_id") == "kbot_feedback"]
    query_id = actions["elements"][0]["value"]
    return query_id, list(strings(call.params))


def ask_teams(bench: Bench, question: str, channel: str, user: str) -> tuple[str, list[str]]:
    before = len(bench.connector.messages())
    # A new post of its own (its own reply chain), not a follow-up of the questions before.
    root = str(1_700_000_000_000 + next(ROOTS))
    activity = teams.channel_mention(
        bench.connector.url, question, channel=channel, team=TEAMS_TEAM, user=user, root=root
    )
    req = urllib.request.Request(
        bench.url + "api/messages",
        data=json.dumps(activity).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert send(req).status == 200
    # The answer, after a "working on it" message if it took longer than working_after_s.
    delivered = bench.connector.messages()[before:]
    assert delivered
    with bench.rt.db.session() as s:
        [query_id] = s.scalars(select(QueryRecord.id).where(QueryRecord.user_id == f"aad-{user}"))
    return query_id, [t for call in delivered for t in strings(call.body)]


def test_no_restricted_chunk_reaches_any_surface_outside_its_audience(bench: Bench) -> None:
    """All 60 dev questions on each of the four surfaces, from a place with no audience:
    0 restricted chunks retrieved, cited (sources or closest sources) or quoted."""
    t0 = time.perf_counter()
    surfaces = {name: Leaks() for name in ("cli", "web", "slack", "teams")}
    for i, q in enumerate(bench.questions):
        asked = {
            "cli": ask_cli(bench, q.question),
            "web": ask_web(bench, q.question, i),
            "slack": ask_slack(bench, q.question, SLACK_OPEN),
            "teams": ask_teams(bench, q.question, TEAMS_OPEN, f"leak{i}"),
        }
        for surface, (query_id, shown) in asked.items():
            bench.judge(surfaces[surface], q.id, query_id, shown)
    summary = ", ".join(
        f"{s} {v.asked} asked ({v.abstained} abstained) / {len(v.retrieved)} retrieved "
        f"{len(v.cited)} cited {len(v.quoted)} quoted"
        for s, v in surfaces.items()
    )
    print(
        f"\naudience leak: {bench.restricted_chunks} restricted chunks in the index, "
        f"{len(bench.secret)} restricted word windows; {summary}; "
        f"{sum(v.total() for v in surfaces.values())} leaks in {time.perf_counter() - t0:.0f} s"
    )
    for surface, leaks in surfaces.items():
        assert leaks.asked == len(bench.questions), surface
        assert leaks.retrieved == [], surface
        assert leaks.cited == [], surface
        assert leaks.quoted == [], surface


def test_members_find_their_audience_s_documents_and_no_other(bench: Bench) -> None:
    """The positive control: inside an audience its copies are retrieved and quoted (so the
    zero outside is meaningful), while the other audience's stay hidden."""
    for audience, name in AUDIENCES.items():
        other = next(n for n in RESTRICTED if n != name)
        own = [
            q for q in bench.questions if any(bench.audience_of[d] == audience for d in q.relevant)
        ]
        found = quoted = 0
        leaks = Leaks()
        for q in bench.questions:
            answer = bench.rt.answering.ask(
                q.question, Requester("cli", audiences=frozenset({audience}))
            )
            shown = [answer.text, *(c.title for c in answer.citations)]
            if q in own:
                found += any(r["connector"] == name for r in answer.retrieved)
                quoted += bool(shingles("\n".join(shown)) & bench.secret)
            leaks.asked += 1
            leaks.retrieved += [q.id for r in answer.retrieved if r["connector"] == other]
            leaks.cited += [q.id for c in answer.citations if c.connector == other]
        print(
            f"\ninside {audience}: {found}/{len(own)} of its questions retrieve its copies, "
            f"{quoted} quote them; {leaks.total()} chunks of {other} seen"
        )
        assert found >= len(own) / 2, (audience, found, len(own))
        assert quoted > 0, audience
        assert leaks.retrieved == [] and leaks.cited == [], (audience, leaks)


def test_the_count_sees_a_leak_on_every_surface_that_has_audiences(bench: Bench) -> None:
    """The same count over answers given inside the ``sre`` audience (a member's
    ``kbot ask``, a mapped Slack channel and Teams channel) finds restricted chunks of every
    kind: the checks read what each surface really shows. (The web API has no audiences.)"""
    own = [q for q in bench.questions if q.relevant and bench.audience_of[q.relevant[0]] == "sre"]
    surfaces = {name: Leaks() for name in ("cli", "slack", "teams")}
    for i, q in enumerate(own[:5]):
        asked = {
            "cli": ask_cli(bench, q.question, "sre"),
            "slack": ask_slack(bench, q.question, SLACK_SRE),
            "teams": ask_teams(bench, q.question, TEAMS_SRE, f"member{i}"),
        }
        for surface, (query_id, shown) in asked.items():
            bench.judge(surfaces[surface], q.id, query_id, shown)
    for surface, seen in surfaces.items():
        assert seen.retrieved and seen.cited and seen.quoted, (surface, seen)
