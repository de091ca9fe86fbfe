"""Faults under load (docs/RELIABILITY.md): the Chroma server killed and brought back, a
model that hangs, and a sync while two web processes answer. Each test prints its measured
figures on one ``FIGURES`` line (``pytest -s`` shows them). PostgreSQL restarting under
load is tested in tests/db/test_schema_and_retry.py.
"""

from __future__ import annotations

import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bot.answer.types import Answer, Requester
from db.models import QueryRecord
from tests.bot.fake_openai import Step, completion, fake_openai
from tests.bot.servers import runbook_connector, write_runbooks
from tests.conftest import ChromaServer, make_config, migrated

QUESTIONS = [
    "How do I rotate the password of the message queue?",
    "What do I do when a build agent disk is full?",
    "How do I report a phishing email?",
    "What should I install first on a new laptop?",
]
UNAVAILABLE = (
    "The knowledge index is unavailable right now, so I can't search it. "
    "Please try again in a few minutes."
)
GOOD = "Generate a new password with `mq-admin passwd --user orders` [1]."
NEW_DOC = "ops/zanzibarite-quota.md"
NEW_Q = "What do I do when the zanzibarite quota is exhausted?"
# How long the Chroma test keeps asking once the server is back.
SETTLE_S = 2.0
NO_LIMITS = {"per_user": None, "per_channel": None}


@dataclass
class Asked:
    started: float
    ended: float
    answer: Answer


@dataclass
class Load:
    """``threads`` threads asking ``ask(thread, i)`` in turn until stopped (or 40 s pass)."""

    ask: Callable[[int, int], Answer]
    threads: int
    done: list[Asked] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _running: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        deadline = time.monotonic() + 40

        def run(n: int) -> None:
            i = 0
            while not self._stop.is_set() and time.monotonic() < deadline:
                t0 = time.monotonic()
                try:
                    answer = self.ask(n, i)
                except BaseException as e:  # noqa: BLE001 - asserted on by the test
                    self.errors.append(e)
                    return
                self.done.append(Asked(t0, time.monotonic(), answer))
                i += 1

        self._running = [threading.Thread(target=run, args=(n,)) for n in range(self.threads)]
        for t in self._running:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._running:
            t.join(60)

    def wait_for(self, ok: Callable[[], bool], timeout: float, what: str) -> float:
        """Poll ``ok`` until it holds; the time it held at."""
        deadline = time.monotonic() + timeout
        while not ok():
            assert not self.errors, self.errors
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.02)
        return time.monotonic()


class _Stamped(list):
    """The fake's request list, also noting when each request came in."""

    def __init__(self, times: list[float]):
        super().__init__()
        self.times = times

    def append(self, item: Any) -> None:
        self.times.append(time.monotonic())
        super().append(item)


def _asker(rt, questions: list[str] = QUESTIONS) -> Callable[[int, int], Answer]:
    def ask(n: int, i: int) -> Answer:
        return rt.answering.ask(
            questions[(n + i) % len(questions)], Requester(platform="web", user=f"u{n}")
        )

    return ask


def _server_config(tmp_path: Path, name: str, kb: Path, db: str, url: str):
    return make_config(
        tmp_path / name,
        [runbook_connector(kb)],
        storage={"data_dir": str(tmp_path / name), "database_url": db, "chroma_url": url},
        rate_limits=NO_LIMITS,
    )


def _synced_topology(tmp_path: Path, chroma_url: str, pg_url: str, make, webs: list[str]):
    """A worker that has synced the runbooks into the Chroma server, and web processes
    named ``webs`` (data folders of their own; the same database and server):
    (the runbooks' folder, the worker, the web runtimes)."""
    kb = write_runbooks(tmp_path / "kb")
    db = migrated(pg_url)
    worker = make(_server_config(tmp_path, "worker", kb, db, chroma_url))
    assert worker.indexer.sync()[0].ok
    return kb, worker, [make(_server_config(tmp_path, name, kb, db, chroma_url)) for name in webs]


def _heartbeat(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=1):
            return True
    except OSError:
        return False


def _restart(server: ChromaServer, log: Path) -> subprocess.Popen:
    """`chroma run` again with the same command line: the same port and data folder."""
    out = log.open("ab")
    proc = subprocess.Popen(server.process.args, stdout=out, stderr=subprocess.STDOUT)
    out.close()
    return proc


def _logged(rt, ids: list[str]) -> dict[str, str]:
    with rt.db.session() as s:
        rows = s.execute(select(QueryRecord.id, QueryRecord.answer).where(QueryRecord.id.in_(ids)))
        return {qid: text for qid, text in rows}


def _figures(name: str, **figures: Any) -> None:
    print(f"FIGURES {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


def test_chroma_killed_mid_load_says_search_is_unavailable_and_recovers(
    tmp_path, chroma_server, pg_url, runtime_factory
):
    _, _, [web] = _synced_topology(tmp_path, chroma_server.url, pg_url, runtime_factory, ["web"])
    load = Load(_asker(web), threads=4).start()
    restarted: subprocess.Popen | None = None
    try:
        load.wait_for(lambda: len(load.done) >= 8, 30, "answers before the fault")
        # An answer in flight while the server dies may end, unavailable, before the kill
        # returns: "before the fault" is what ended before it began.
        killing = time.monotonic()
        chroma_server.process.kill()
        chroma_server.process.wait(10)
        killed = time.monotonic()
        load.wait_for(
            lambda: sum(a.started > killed for a in load.done) >= 20, 20, "answers in the outage"
        )
        restarted = _restart(chroma_server, tmp_path / "chroma.log")
        load.wait_for(lambda: _heartbeat(chroma_server.url), 30, "chroma to come back")
        back = time.monotonic()
        load.wait_for(
            lambda: (
                time.monotonic() > back + SETTLE_S
                and sum(a.started > back + SETTLE_S / 2 for a in load.done) >= 8
            ),
            20,
            "answers after chroma came back",
        )
    finally:
        load.stop()
        if restarted is not None:
            restarted.terminate()
            restarted.wait(10)
    assert not load.errors, load.errors

    outage = [a for a in load.done if a.started > killed and a.ended < back]
    assert len(outage) >= 20
    for a in outage:
        assert a.answer.error is not None
        assert a.answer.text == UNAVAILABLE and not a.answer.citations
        assert "Traceback" not in a.answer.text
    after = [a for a in load.done if a.started > back]
    first_good = min(a.ended for a in after if a.answer.error is None)
    failed = [a.ended for a in after if a.answer.error is not None]
    last_failed = max(failed, default=back)
    # Nothing stays broken: the second half of the settling time is answered in full,
    # and as before the fault.
    settled = [a for a in after if a.started > back + SETTLE_S / 2]
    assert settled and all(a.answer.error is None for a in settled), failed
    before = {a.answer.question: a.answer.text for a in load.done if a.ended < killing}
    changed = [
        (before[a.answer.question], a.answer.text)
        for a in settled
        if a.answer.text != before[a.answer.question]
    ]
    assert not changed, changed[0]
    # Every question is in the query log, the failed ones with what the user was told.
    logged = _logged(web, [a.answer.query_id for a in load.done])
    assert len(logged) == len(load.done)
    assert all(logged[a.answer.query_id] == UNAVAILABLE for a in outage)
    slowest = max(a.ended - a.started for a in outage)
    _figures(
        "chroma",
        answers=len(load.done),
        during_outage=len(outage),
        slowest_unavailable_s=round(slowest, 3),
        back_to_first_good_s=round(first_good - back, 3),
        unavailable_after_back=len(failed),
        back_to_last_unavailable_s=round(last_failed - back, 3),
    )
    assert slowest < 5


def test_a_hanging_model_opens_the_breaker_and_it_closes_when_the_model_answers(
    tmp_path, runtime_factory
):
    timeout_s, cooldown_s = 1.0, 3.0
    kb = write_runbooks(tmp_path / "kb")
    with fake_openai() as fake:
        calls: list[float] = []
        fake.requests = _Stamped(calls)
        fake.script = [Step(body=completion(GOOD).body, delay_s=4)]  # a hang
        rt = runtime_factory(
            make_config(
                tmp_path,
                [runbook_connector(kb)],
                llm=fake.llm_section(
                    timeout_s=timeout_s,
                    breaker_failures=3,
                    breaker_cooldown_s=cooldown_s,
                    cache=False,
                ),
                rate_limits=NO_LIMITS,
            )
        )
        assert rt.indexer.sync()[0].ok
        breaker = rt.answering.generator.breaker
        opened: list[float] = []
        failure = breaker.failure

        def recorded_failure() -> None:
            was = breaker.state
            failure()
            if was != "open" and breaker.state == "open":
                opened.append(time.monotonic())

        breaker.failure = recorded_failure
        load = Load(_asker(rt), threads=4).start()
        try:
            load.wait_for(lambda: bool(opened), 20, "the breaker to open")
            load.wait_for(
                lambda: time.monotonic() > opened[0] + cooldown_s + timeout_s + 0.5,
                20,
                "a cooldown and its trial",
            )
            fake.script = [completion(GOOD)]  # the model answers again
            healed = time.monotonic()
            closed = load.wait_for(lambda: breaker.state == "closed", 20, "the breaker to close")
            load.wait_for(
                lambda: any(a.answer.mode == "generated" for a in load.done), 20, "an answer"
            )
        finally:
            load.stop()
    assert not load.errors, load.errors

    timed_out = [a for a in load.done if a.answer.fallback_reason == "timeout"]
    shed = [a for a in load.done if a.answer.fallback_reason == "circuit_open"]
    for a in timed_out + shed:  # the extractive answer, with its sources
        assert a.answer.mode == "extractive" and a.answer.citations
    generate = [a.answer.latency_ms["generate"] / 1000 for a in timed_out]
    assert generate and max(generate) < timeout_s + 1.0
    assert shed and all("generate" not in a.answer.latency_ms for a in shed)  # no call
    # While open, the model is called only for the one trial after each cooldown.
    while_open = [t for t in calls if opened[0] < t < healed]
    trials = int((healed - opened[0]) // cooldown_s)
    assert len(while_open) <= trials
    _figures(
        "llm",
        answers=len(load.done),
        timed_out=len(timed_out),
        fallback_generate_s_max=round(max(generate), 3),
        timeout_s=timeout_s,
        circuit_open_answers=len(shed),
        circuit_open_answer_s_max=round(max(a.ended - a.started for a in shed), 3),
        open_for_s=round(healed - opened[0], 2),
        calls_while_open=len(while_open),
        healed_to_closed_s=round(closed - healed, 3),
        cooldown_s=cooldown_s,
    )


def test_a_sync_during_load_is_found_by_both_web_processes(
    tmp_path, chroma_server, pg_url, runtime_factory
):
    kb, worker, webs = _synced_topology(
        tmp_path, chroma_server.url, pg_url, runtime_factory, ["web1", "web2"]
    )
    for web in webs:
        assert web.answering.ask(QUESTIONS[0]).error is None  # the keyword index is built

    def ask(n: int, i: int) -> Answer:
        return _asker(webs[n % 2])(n, i)

    def finds(web) -> bool:
        answer = web.answering.ask(NEW_Q, Requester(platform="test"))
        return bool(answer.citations) and answer.citations[0].path == NEW_DOC

    def keyword(web) -> bool:
        return any(cid.split(":")[1] == NEW_DOC for cid, _ in web.lexical.search("zanzibarite", 5))

    load = Load(ask, threads=4).start()
    try:
        load.wait_for(lambda: len(load.done) >= 8, 30, "answers before the sync")
        (kb / NEW_DOC).write_text(
            "# Zanzibarite quota\n\nWhen the zanzibarite quota is exhausted, file a ticket "
            "with the storage team and raise the quota in the console.\n",
            encoding="utf-8",
        )
        synced = worker.indexer.sync()[0]
        ended = time.monotonic()
        assert synced.ok and synced.added == 1
        checks = {
            f"web{n}_{what}_s": (lambda w=web, c=check: c(w))
            for n, web in enumerate(webs, 1)
            for what, check in (("answer", finds), ("keywords", keyword))
        }
        found: dict[str, float] = {}

        def all_found() -> bool:
            for name, check in checks.items():
                if name not in found and check():
                    found[name] = round(time.monotonic() - ended, 3)
            return len(found) == len(checks)

        load.wait_for(all_found, 15, "the new document on both web processes")
        during = len(load.done)
        load.wait_for(lambda: len(load.done) >= during + 8, 20, "answers after the sync")
    finally:
        load.stop()
    assert not load.errors, load.errors
    assert all(a.answer.error is None for a in load.done)
    first = {}
    for a in load.done:  # and each question is answered the same before and after
        assert a.answer.text == first.setdefault(a.answer.question, a.answer.text)
    assert max(found.values()) < 10
    _figures("sync", answers=len(load.done), errors=0, **found)
