"""kbot load benchmark: two web processes, one worker, a Chroma server, PostgreSQL and Redis.

The topology of deploy/compose.yaml, as real processes on 127.0.0.1: ``chroma run``, the
local PostgreSQL (a fresh schema, migrated with ``kbot db upgrade``), the local Redis
(database 14), one ``kbot worker`` that syncs the bundled sample knowledge (``knowledge/``)
into the Chroma server, and two ``kbot serve --no-scheduler`` on ports of their own. This
process holds the stand-ins for Slack's Web API (tests/bot/fake_slack.py) and Teams' Bot
Connector (tests/bot/teams_fakes.py); the web processes reach them over HTTP.

It sends N signed Slack ``app_mention`` events and M Teams channel mentions at once,
alternating between the two web processes, then clicks 👍 on every answer (a signed
``block_actions`` on the Slack message's button; Teams' feedback-loop invoke on the answer's
message), and measures per platform:

- the ack: request sent to its HTTP response;
- the answer: request sent to the stand-in receiving the message that carries the answer;
- errors: non-2xx responses, answers missing at the deadline, requests timed out;
- integrity, read from PostgreSQL: one ``queries`` row per question, one ``feedback`` row
  per vote, on that question's answer.

The figures are printed and written into docs/BENCHMARKS.md, in this script's own region.
Usage: ``.venv/bin/python bench/load.py [--slack 50] [--teams 50] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout, TCPConnector
from sqlalchemy import create_engine

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for bench.run and the stand-ins in tests/

from bench.run import _busy_ticks, machine, pct, write_region  # noqa: E402
from bot.chat.slack_blocks import FEEDBACK_BLOCK, VOTE_UP  # noqa: E402
from tests.bot import teams_fakes as teams  # noqa: E402
from tests.bot.fake_slack import (  # noqa: E402
    BOT_TOKEN,
    SIGNING_SECRET,
    FakeSlack,
    Loop,
    block_action,
    event_callback,
    form_body,
    mention,
    serving,
    signed_headers,
)
from tests.conftest import kbot_keys_cleared, pg_schema  # noqa: E402

DEFAULT_OUT = REPO / "docs" / "BENCHMARKS.md"
START = "<!-- bench/load.py:start -->"
END = "<!-- bench/load.py:end -->"
REDIS_URL = "redis://127.0.0.1:6379/14"
CARD = "application/vnd.microsoft.card.adaptive"
# Bounds on every wait: a stuck process fails the run instead of hanging it.
START_S = 180.0  # Chroma up, the worker's sync done, both web processes healthy
REQUEST_S = 30.0  # one HTTP request (a Teams turn waits up to teams.working_after_s)
ANSWERS_S = 300.0  # after the burst, for every answer to arrive
VOTES_S = 120.0  # after the votes, for Slack's confirmations
STOP_S = 20.0  # SIGTERM to SIGKILL
SLACK_ACK_S = 3.0  # Slack retries an event not acknowledged within this
TEAMS_TURN_S = 15.0  # Teams gives a bot this long to answer an activity
SHARED_CPU = 0.05  # other work using more of the machine than this makes the run "shared"
QUESTIONS = [
    "How do I rotate the payments API key?",
    "What should I do when a Kubernetes node runs out of disk?",
    "What is the escalation path for a SEV1?",
    "Redis memory is near maxmemory, what do I do?",
    "What should I check when checkout errors spike?",
    "How do I request SSO access to an app?",
    "How do I roll back a bad deploy?",
    "How do I get access to the VPN?",
    "What are the incident severity levels?",
    "How does the on-call handover work?",
    "How do I connect to the office Wi-Fi?",
    "What goes into an incident postmortem?",
]


def log(msg: str) -> None:
    print(f"[bench-load {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class TimedConnector(teams.Connector):
    """The Bot Connector stand-in, also noting when each call arrived."""

    received: list[float] = field(default_factory=list)

    def _record(self, *args: Any) -> None:
        self.received.append(time.perf_counter())  # under self._cond, as calls is
        super()._record(*args)


@dataclass
class Question:
    """One question sent, and what became of it."""

    platform: str  # slack | teams
    web: int  # which web process it was sent to
    user: str  # as stored in queries.user_id
    payload: dict[str, Any]
    sent: float = 0.0
    status: int | None = None  # HTTP status of the ack; None: no response
    ack_ms: float | None = None
    answer_ms: float | None = None
    answer: Any = None  # the stand-in's record of the answer message
    vote_status: int | None = None
    vote_ack_ms: float | None = None
    vote_confirmed: bool = False
    query_id: str | None = None  # Slack: from the posted answer's button


# -- processes -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    def tail(self, chars: int = 1500) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def check(self) -> None:
        if self.popen.poll() is not None:
            raise SystemExit(f"{self.name} exited ({self.popen.returncode}):\n{self.tail()}")


class Processes:
    """Everything started, stopped together (SIGTERM to each process group, then SIGKILL)."""

    def __init__(self, tmp: Path, env: dict[str, str]):
        self.tmp, self.env, self.procs = tmp, env, []

    def start(self, name: str, argv: list[str]) -> Proc:
        path = self.tmp / f"{name}.log"
        with path.open("wb") as out:
            popen = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        proc = Proc(name, popen, path)
        self.procs.append(proc)
        return proc

    def cpu_ticks(self) -> int:
        """CPU ticks used so far by this process and every process started."""
        t = os.times()
        total = int((t.user + t.system) * os.sysconf("SC_CLK_TCK"))
        for p in self.procs:
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{p.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total

    def stop(self) -> None:
        """Stop every process started (again: a no-op for those already stopped)."""
        for p in self.procs:
            if p.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_S
        for p in self.procs:
            try:
                p.popen.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                log(f"{p.name} did not stop on SIGTERM; killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.popen.pid, signal.SIGKILL)
                p.popen.wait(timeout=STOP_S)


def kbot(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "bot.cli", "--config", str(config), *args]


def wait_until(what: str, check, procs: list[Proc], timeout: float = START_S) -> Any:
    """Poll ``check()`` until it gives something truthy; fail on a dead process or timeout."""
    deadline = time.monotonic() + timeout
    while True:
        for p in procs:
            p.check()
        with contextlib.suppress(Exception):
            if result := check():
                return result
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}:\n{p.tail()}" for p in procs)
            raise SystemExit(f"timed out after {timeout:g} s waiting for {what}\n{tails}")
        time.sleep(0.2)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as r:
        return json.loads(r.read() or b"null")


def write_config(path: Path, data_dir: Path, storage: dict[str, str], slack_api: str) -> Path:
    """One process's config: the shared storage, its own data_dir, rate limits off."""
    data = {
        "storage": {"data_dir": str(data_dir), **storage, "auto_migrate": False},
        "slack": {"api_base_url": slack_api},
        # A few simulated users ask many questions at once: the limit is not what is measured.
        "rate_limits": {"per_user": None, "per_channel": None},
        "connectors": [
            {
                "name": "sample",
                "type": "filesystem",
                "path": str(REPO / "knowledge"),
                "schedule": "1h",
            }
        ],
    }
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")  # JSON is YAML
    return path


def process_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MICROSOFT_APP_", "SLACK_", "KBOT_"))
    }
    # Teams in emulator mode: a bot with an app id fetches its reply token from Entra ID,
    # which has no local stand-in (so activities are sent unsigned).
    env.update(
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_BOT_TOKEN=BOT_TOKEN,
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=str(REPO),
    )
    return env


# -- the load --------------------------------------------------------------------------------


def make_questions(n_slack: int, n_teams: int, service_url: str, tag: str) -> list[Question]:
    """Slack and Teams questions interleaved, each platform alternating web processes."""
    out: list[Question] = []
    for i in range(max(n_slack, n_teams)):
        text = QUESTIONS[i % len(QUESTIONS)]
        if i < n_slack:
            user = f"U{tag}{i:04d}"
            event = mention(text, f"C{tag}{i:04d}", user=user)
            out.append(Question("slack", i % 2, user, event))
        if i < n_teams:
            user = f"{tag.lower()}{i:04d}"
            activity = teams.channel_mention(
                service_url,
                text,
                channel=f"19:{tag.lower()}-{i:04d}@thread.tacv2",
                team="19:load-team@thread.tacv2",
                user=user,
                root=f"17{i:011d}",
            )
            out.append(Question("teams", (i + 1) % 2, f"aad-{user}", activity))
    return out


async def post(session: ClientSession, url: str, body: str, headers: dict[str, str]):
    """(perf_counter when sent, HTTP status or None on a timeout/connection error, ms)."""
    t0 = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=headers) as r:
            await r.read()
            status: int | None = r.status
    except (TimeoutError, OSError):
        status = None
    return t0, status, (time.perf_counter() - t0) * 1000


async def send_question(session: ClientSession, webs: list[str], q: Question) -> None:
    if q.platform == "slack":
        body = json.dumps(event_callback(q.payload))
        url, headers = webs[q.web] + "slack/events", signed_headers(body)
    else:
        body = json.dumps(q.payload)
        url, headers = webs[q.web] + "api/messages", {"Content-Type": "application/json"}
    q.sent, q.status, ms = await post(session, url, body, headers)
    q.ack_ms = ms if q.status is not None else None


async def send_vote(session: ClientSession, webs: list[str], q: Question, url: str) -> None:
    if q.platform == "slack":
        message = q.answer.reply["message"]
        payload = block_action(message, q.payload["channel"], VOTE_UP, q.query_id or "", q.user)
        body = form_body(payload)
        target, headers = webs[q.web] + "slack/events", signed_headers(body, form=True)
    else:
        reply_to = q.answer.returned_id if q.answer.method == "POST" else q.answer.activity_id
        vote = teams.feedback_invoke(
            url,
            reply_to,
            "like",
            None,
            user=q.user.removeprefix("aad-"),
            conversation=q.payload["conversation"],
        )
        body = json.dumps(vote)
        target, headers = webs[q.web] + "api/messages", {"Content-Type": "application/json"}
    _, q.vote_status, ms = await post(session, target, body, headers)
    q.vote_ack_ms = ms if q.vote_status is not None else None


async def concurrently(webs: list[str], items: list[Question], send, *extra: Any) -> None:
    timeout = ClientTimeout(total=REQUEST_S)
    async with ClientSession(connector=TCPConnector(limit=0), timeout=timeout) as session:
        await asyncio.gather(*(send(session, webs, q, *extra) for q in items))


def find_answers(qs: list[Question], slack: FakeSlack, connector: TimedConnector) -> None:
    """Fill in each question's answer message (and its arrival time) when it has come."""
    with connector._cond:
        calls = list(zip(connector.calls, connector.received, strict=True))
    for q in qs:
        if q.answer is not None:
            continue
        if q.platform == "slack":
            ev = q.payload
            for c in slack.of("chat.postMessage", channel=ev["channel"], thread_ts=ev["ts"]):
                buttons = [
                    b for b in c.params.get("blocks", []) if b.get("block_id") == FEEDBACK_BLOCK
                ]
                if buttons and c.reply.get("ok"):
                    q.answer, q.answer_ms = c, (c.received - q.sent) * 1000
                    q.query_id = buttons[0]["elements"][0]["value"]
        else:
            conversation = q.payload["conversation"]["id"]
            for c, received in calls:
                attachments = c.body.get("attachments") or []
                if (
                    c.conversation_id == conversation
                    and c.status == 200
                    and any(a.get("contentType") == CARD for a in attachments)
                ):
                    q.answer, q.answer_ms = c, (received - q.sent) * 1000


def wait_for_answers(qs, slack, connector, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        find_answers(qs, slack, connector)
        if all(q.answer is not None for q in qs if q.status == 200):
            return
        if time.monotonic() > deadline:
            return
        time.sleep(0.1)


def wait_for_confirmations(qs: list[Question], slack: FakeSlack, timeout: float) -> None:
    """Slack's vote is recorded in a background task, then the message updated: wait for that."""
    deadline = time.monotonic() + timeout
    while True:
        for q in qs:
            if q.platform == "slack" and not q.vote_confirmed and q.vote_status == 200:
                ts = q.answer.reply["message"]["ts"]
                q.vote_confirmed = bool(
                    slack.of("chat.update", channel=q.payload["channel"], ts=ts)
                )
            elif q.platform == "teams":
                q.vote_confirmed = q.vote_status == 200  # the invoke answers once it is stored
        pending = [q for q in qs if q.vote_status == 200 and not q.vote_confirmed]
        if not pending or time.monotonic() > deadline:
            return
        time.sleep(0.1)


# -- integrity -------------------------------------------------------------------------------


@dataclass
class Integrity:
    questions: int = 0
    one_row: int = 0
    no_row: int = 0
    duplicated: int = 0  # questions with more than one queries row
    abstained: int = 0
    votes: int = 0
    one_vote_row: int = 0
    vote_missing: int = 0
    vote_duplicated: int = 0
    vote_elsewhere: int = 0  # Slack: the button's query id is not this question's row
    extra_queries: int = 0  # rows for users this run did not ask as
    extra_feedback: int = 0


def integrity(engine: Any, qs: list[Question], warm_users: set[tuple[str, str]]) -> Integrity:
    from sqlalchemy import text

    with engine.connect() as conn:
        queries = conn.execute(
            text("SELECT id, platform, user_id, abstained FROM queries")
        ).fetchall()
        feedback = conn.execute(text("SELECT query_id, user_id, vote FROM feedback")).fetchall()
    by_user: dict[tuple[str, str], list[Any]] = {}
    for row in queries:
        by_user.setdefault((row.platform, row.user_id), []).append(row)
    votes_on: dict[str, list[Any]] = {}
    for row in feedback:
        votes_on.setdefault(row.query_id, []).append(row)
    res = Integrity(questions=len(qs))
    asked = {(q.platform, q.user) for q in qs}
    res.extra_queries = sum(
        len(rows) for key, rows in by_user.items() if key not in asked and key not in warm_users
    )
    mine: set[str] = set()
    for q in qs:
        rows = by_user.get((q.platform, q.user), [])
        res.no_row += not rows
        res.duplicated += len(rows) > 1
        res.one_row += len(rows) == 1
        res.abstained += sum(bool(r.abstained) for r in rows)
        ids = {r.id for r in rows}
        mine |= ids
        if q.answer is None:
            continue  # no answer, so no vote
        res.votes += 1
        if q.platform == "slack" and q.query_id not in ids:
            res.vote_elsewhere += 1
        mine_votes = [
            v for i in ids for v in votes_on.get(i, []) if v.user_id == q.user and v.vote == "up"
        ]
        res.one_vote_row += len(mine_votes) == 1
        res.vote_missing += not mine_votes
        res.vote_duplicated += len(mine_votes) > 1
    res.extra_feedback = sum(1 for row in feedback if row.query_id not in mine or row.vote != "up")
    return res


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Run:
    chunks: int = 0
    startup_s: float = 0.0
    burst_s: float = 0.0
    total_s: float = 0.0
    others_share: float = 0.0  # of the machine during the burst, outside what was started
    questions: list[Question] = field(default_factory=list)
    integrity: Integrity = field(default_factory=Integrity)
    working_messages: int = 0  # Teams answers that came as an update of "working on it"
    logged_errors: dict[str, int] = field(default_factory=dict)


def run(args: argparse.Namespace) -> Run:
    res = Run()
    t_start = time.perf_counter()
    loop = Loop()
    slack, connector = FakeSlack(), TimedConnector()
    tmp = Path(tempfile.mkdtemp(prefix="kbot-bench-load-"))
    procs = Processes(tmp, process_env())
    try:
        with contextlib.ExitStack() as stack:
            slack_url = stack.enter_context(serving(loop, slack.app()))
            connector_url = stack.enter_context(serving(loop, connector.app()))
            db_url = stack.enter_context(pg_schema("kbot_load"))
            engine = create_engine(db_url)
            stack.callback(engine.dispose)
            redis_url = stack.enter_context(kbot_keys_cleared(REDIS_URL, connect_timeout_s=2))
            # Unwound first: the processes stop before their schema and keys are removed.
            stack.callback(procs.stop)
            slack.url, connector.url = slack_url, connector_url
            chroma_port = free_port()
            chroma_url = f"http://127.0.0.1:{chroma_port}"
            storage = {"database_url": db_url, "chroma_url": chroma_url, "redis_url": redis_url}
            configs = [
                write_config(tmp / f"{name}.yaml", tmp / name, storage, slack_url + "api/")
                for name in ("worker", "web-a", "web-b")
            ]
            log("kbot db upgrade")
            upgrade = subprocess.run(
                kbot(configs[0], "db", "upgrade"),
                env=procs.env,
                capture_output=True,
                text=True,
                timeout=START_S,
            )
            if upgrade.returncode:
                raise SystemExit(f"kbot db upgrade failed:\n{upgrade.stderr[-1500:]}")
            exe = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
            chroma = procs.start(
                "chroma",
                [exe, "run", "--path", str(tmp / "chroma-server"), "--host", "127.0.0.1"]
                + ["--port", str(chroma_port)],
            )
            wait_until("chroma run", lambda: get_json(f"{chroma_url}/api/v2/heartbeat"), [chroma])
            log("starting the worker and two web processes (each loads the embedding model)")
            worker = procs.start("worker", kbot(configs[0], "worker"))
            ports = [free_port(), free_port()]
            webs = [
                procs.start(name, kbot(cfg, "serve", "--no-scheduler", "--port", str(port)))
                for name, cfg, port in zip(("web-a", "web-b"), configs[1:], ports, strict=True)
            ]
            urls = [f"http://127.0.0.1:{p}/" for p in ports]
            res.chunks = wait_until("the worker's sync", lambda: synced(engine), [chroma, worker])
            for url in urls:
                wait_until(
                    f"{url}healthz",
                    lambda u=url: get_json(u + "healthz")["chunks"] == res.chunks,
                    [chroma, worker, *webs],
                )
            log(f"synced {res.chunks} chunks; both web processes up; warming up")
            warm_users: set[tuple[str, str]] = set()
            for tag in ("WARMA", "WARMB"):  # the second after the BM25 index was rebuilt
                warm = make_questions(2, 2, connector_url, tag)
                asyncio.run(concurrently(urls, warm, send_question))
                wait_for_answers(warm, slack, connector, 60)
                warm_users |= {(q.platform, q.user) for q in warm}
                time.sleep(2.5)
            res.startup_s = time.perf_counter() - t_start

            qs = make_questions(args.slack, args.teams, connector_url, "LOAD")
            log(f"sending {args.slack} Slack and {args.teams} Teams questions at once")
            busy0, mine0, t0 = _busy_ticks(), procs.cpu_ticks(), time.perf_counter()
            asyncio.run(concurrently(urls, qs, send_question))
            wait_for_answers(qs, slack, connector, ANSWERS_S)
            others = (_busy_ticks() - busy0) - (procs.cpu_ticks() - mine0)
            wall_ticks = (time.perf_counter() - t0) * os.sysconf("SC_CLK_TCK")
            res.others_share = max(others, 0) / (wall_ticks * (os.cpu_count() or 1))
            answered = [q for q in qs if q.answer is not None]
            # From the first request sent to the last answer received.
            ends = [q.sent + q.answer_ms / 1000 for q in answered]
            res.burst_s = max(ends, default=time.perf_counter()) - min(q.sent for q in qs)
            log(f"{len(answered)}/{len(qs)} answered in {res.burst_s:.1f} s; voting 👍 on each")
            asyncio.run(concurrently(urls, answered, send_vote, connector_url))
            wait_for_confirmations(answered, slack, VOTES_S)
            res.questions = qs
            res.working_messages = sum(
                1 for q in answered if q.platform == "teams" and q.answer.method == "PUT"
            )
            res.integrity = integrity(engine, qs, warm_users)
            for p in procs.procs:
                p.check()
    finally:
        procs.stop()
        for p in procs.procs:
            text = p.log.read_text(errors="replace") if p.log.exists() else ""
            res.logged_errors[p.name] = sum(
                1 for line in text.splitlines() if " ERROR " in line or "Traceback" in line
            )
        loop.close()
        shutil.rmtree(tmp, ignore_errors=True)
    res.total_s = time.perf_counter() - t_start
    return res


def synced(engine: Any) -> int:
    from sqlalchemy import text

    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT status, chunks FROM sync_runs ORDER BY id DESC LIMIT 1")
        ).first()
    if row is not None and row.status == "failed":
        raise SystemExit("the worker's sync failed")
    return row.chunks if row is not None and row.status == "ok" else 0


# -- the report ------------------------------------------------------------------------------


@dataclass
class Figures:
    platform: str
    sent: int
    non_2xx: int
    timeouts: int
    missing: int
    acks: list[float]
    answers: list[float]
    votes: int
    vote_errors: int
    vote_acks: list[float]


def figures(qs: list[Question], platform: str) -> Figures:
    mine = [q for q in qs if q.platform == platform]
    voted = [q for q in mine if q.answer is not None]
    return Figures(
        platform=platform,
        sent=len(mine),
        non_2xx=sum(1 for q in mine if q.status is not None and not 200 <= q.status < 300),
        timeouts=sum(1 for q in mine if q.status is None),
        missing=sum(1 for q in mine if q.status == 200 and q.answer is None),
        acks=[q.ack_ms for q in mine if q.ack_ms is not None],
        answers=[q.answer_ms for q in mine if q.answer_ms is not None],
        votes=len(voted),
        vote_errors=sum(
            1 for q in voted if q.vote_status is None or not 200 <= q.vote_status < 300
        ),
        vote_acks=[q.vote_ack_ms for q in voted if q.vote_ack_ms is not None],
    )


def ms(value: float) -> str:
    return "–" if value != value else (f"{value:.0f} ms" if value >= 100 else f"{value:.1f} ms")


def report(res: Run, args: argparse.Namespace, started: datetime) -> str:
    facts = machine()
    rows = [figures(res.questions, p) for p in ("slack", "teams")]
    ig = res.integrity
    lines = [
        START,
        "## Load: two web processes, one worker (`bench/load.py`)",
        "",
        f"Run {started:%Y-%m-%d %H:%M} UTC on {facts['CPU']}, {facts['Cores']}, "
        f"Python {facts['Python']}, chromadb {facts['chromadb']}. All on 127.0.0.1 as "
        "separate processes: "
        "`chroma run`, PostgreSQL (a fresh schema, `kbot db upgrade`), Redis, one "
        f"`kbot worker` that synced the bundled sample knowledge ({res.chunks} chunks) into "
        "the Chroma server, and two `kbot serve --no-scheduler`; the Slack and Teams "
        "stand-ins run in the benchmark's process. "
        f"{args.slack} signed Slack mentions and {args.teams} Teams channel mentions were "
        "sent at once, each platform alternating between the two web processes, each from "
        "its own user in its own channel; then 👍 on every answer, all at once. **Ack**: "
        "request sent to HTTP response. **Answer**: request sent to the stand-in receiving "
        "the message with the answer. Teams runs in emulator mode (no app id: a reply "
        "token would come from Entra ID), so its activities are unsigned; Slack's are "
        f"signed. Start-up (processes, sync, warm-up) {res.startup_s:.0f} s; "
        f"the burst to its last answer {res.burst_s:.1f} s; {res.total_s / 60:.1f} min in all. "
        "Other work's CPU during the burst (outside the benchmark and the processes it "
        f"started; PostgreSQL and Redis included): {res.others_share:.0%} of the machine.",
        "",
        "| Platform | Sent | Ack p50 | Ack p99 | Answer p50 | Answer p95 | Answer p99 "
        "| Non-2xx | Missing answers | Timeouts | 👍 ack p50 / p99 | 👍 errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for f in rows:
        lines.append(
            f"| {f.platform.capitalize()} | {f.sent} | {ms(pct(f.acks, 50))} | "
            f"{ms(pct(f.acks, 99))} | {ms(pct(f.answers, 50))} | {ms(pct(f.answers, 95))} | "
            f"{ms(pct(f.answers, 99))} | {f.non_2xx} | {f.missing} | {f.timeouts} | "
            f"{ms(pct(f.vote_acks, 50))} / {ms(pct(f.vote_acks, 99))} | {f.vote_errors} |"
        )
    errors = ", ".join(f"{name} {n}" for name, n in res.logged_errors.items())
    lines += [
        "",
        f"Integrity, read from PostgreSQL: **{ig.one_row} of {ig.questions}** questions have "
        f"exactly one `queries` row ({ig.no_row} none, {ig.duplicated} more than one; "
        f"{ig.abstained} abstained); **{ig.one_vote_row} of {ig.votes}** votes have exactly "
        f"one `feedback` row on their own question's answer ({ig.vote_missing} missing, "
        f"{ig.vote_duplicated} more than one). Rows nobody asked for: {ig.extra_queries} "
        f"queries, {ig.extra_feedback} feedback. Slack buttons naming another question's "
        f"answer: {ig.vote_elsewhere}. Teams answers sent as an update of the "
        f"'working on it' message: {res.working_messages}. ERROR lines and tracebacks in "
        f"the processes' logs: {errors}.",
        "",
        *interpretation(rows, res),
        END,
    ]
    return "\n".join(lines) + "\n"


def interpretation(rows: list[Figures], res: Run) -> list[str]:
    slack, teams_ = rows
    ig = res.integrity
    slack_ok = "under" if pct(slack.acks, 99) < SLACK_ACK_S * 1000 else "**over**"
    teams_ok = "under" if pct(teams_.acks, 99) < TEAMS_TURN_S * 1000 else "**over**"
    out = [
        f"A Slack ack only starts a background task: p99 {ms(pct(slack.acks, 99))} under the "
        f"burst, {slack_ok} the {SLACK_ACK_S:g} s after which Slack retries. A Teams ack is "
        "the whole turn, which waits up to `teams.working_after_s` (5 s) for the answer "
        f"before replying 'working on it', so its p99 ({ms(pct(teams_.acks, 99))}) follows "
        f"the answer time, {teams_ok} the {TEAMS_TURN_S:g} s Teams allows. Answers queue for "
        f"the embedding model: the two web processes share this machine's {os.cpu_count()} "
        "cores (with Chroma, PostgreSQL and the benchmark), so the "
        f"{slack.sent + teams_.sent} questions took {res.burst_s:.1f} s from the first "
        "request to the last answer."
    ]
    cores = os.cpu_count() or 1
    if res.others_share > SHARED_CPU:
        out.append(
            f"The machine was shared ({res.others_share:.0%} of its {cores} cores went to "
            "other work during the burst), so these latencies are pessimistic."
        )
    failures = sum(f.non_2xx + f.missing + f.timeouts + f.vote_errors for f in rows)
    lost = ig.questions - ig.one_row + ig.votes - ig.one_vote_row
    stray = ig.extra_queries + ig.extra_feedback + ig.vote_elsewhere
    if not (failures or lost or stray):
        out.append(
            "Nothing was lost or doubled: every question was logged once and every vote "
            "stored once, on its own answer, across the two processes."
        )
    else:
        out.append(
            f"**Not clean**: {failures} failed requests or missing answers, {lost} questions "
            f"or votes without exactly one row, {stray} rows that belong to no question "
            "asked or on another question's answer."
        )
    return [" ".join(out)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--slack", type=int, default=50, help="Slack mentions sent at once")
    ap.add_argument("--teams", type=int, default=50, help="Teams mentions sent at once")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    # Stopped from outside, still stop what was started (the finally blocks run).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = datetime.now(UTC)
    res = run(args)
    for f in (figures(res.questions, p) for p in ("slack", "teams")):
        log(
            f"{f.platform}: ack p50 {pct(f.acks, 50):.1f} p99 {pct(f.acks, 99):.1f} ms; "
            f"answer p50 {pct(f.answers, 50):.0f} p95 {pct(f.answers, 95):.0f} "
            f"p99 {pct(f.answers, 99):.0f} ms; non-2xx {f.non_2xx}, missing {f.missing}, "
            f"timeouts {f.timeouts}, vote errors {f.vote_errors}"
        )
    log(f"integrity: {res.integrity}")
    section = report(res, args, started)
    print(section)
    write_region(args.out, START, END, section)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
