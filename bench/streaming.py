"""kbot streaming benchmark: time to the first streamed text and to the final message in
the web chat and in Teams, next to the time to the answer posted whole.

The real server (the aiohttp app: web chat, and Teams in emulator mode with a local
stand-in for the Bot Connector, tests/bot/teams_fakes.py) runs over the bundled sample
knowledge (``knowledge/``) with an ``llm:``: the scripted OpenAI-compatible server of
tests/bot/fake_openai.py as a model that takes ``FIRST_TOKEN_S`` to its first token and
``MODEL_S`` in all. One question at a time, each surface both ways:

- web, posted: ``POST /api/ask``, to its JSON reply;
- web, streamed: ``POST /api/ask/stream``, to its first ``delta`` event and its ``final``;
- Teams, posted: a channel @-mention, to the Bot Connector receiving the card;
- Teams, streamed: a 1:1 message, to the first streaming typing update (Teams' throttle,
  ``teams.stream_update_s``, 1 s after the informative update) and to the final message.

The figures are printed and written into docs/BENCHMARKS.md, in this script's own region.
Usage: ``.venv/bin/python bench/streaming.py [--n 12] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for bench.run and the stand-ins in tests/

from bench.model import FIRST_TOKEN_S, MODEL_S, QUESTIONS, streamed, whole  # noqa: E402
from bench.run import machine, write_region  # noqa: E402
from bot.runtime import Runtime  # noqa: E402
from bot.server import create_app  # noqa: E402
from config import parse_config  # noqa: E402
from tests.bot import teams_fakes as teams  # noqa: E402
from tests.bot.fake_openai import FakeOpenAI, fake_openai  # noqa: E402
from tests.bot.servers import serve  # noqa: E402

DEFAULT_OUT = REPO / "docs" / "BENCHMARKS.md"
START = "<!-- bench/streaming.py:start -->"
END = "<!-- bench/streaming.py:end -->"
APP_ENV = ("MICROSOFT_APP_ID", "MICROSOFT_APP_PASSWORD", "MICROSOFT_APP_TYPE")


def log(msg: str) -> None:
    print(f"[bench-streaming {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def post(url: str, body: dict) -> urllib.request.Request:
    return urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )


def web_posted(url: str, question: str) -> float | None:
    t0 = time.perf_counter()
    with urllib.request.urlopen(post(url + "api/ask", {"question": question}), timeout=60) as r:
        answer = json.loads(r.read())
    ms = (time.perf_counter() - t0) * 1000
    return None if answer["abstained"] else ms


def web_streamed(url: str, question: str) -> tuple[float, float] | None:
    t0 = time.perf_counter()
    first = None
    req = post(url + "api/ask/stream", {"question": question})
    with urllib.request.urlopen(req, timeout=60) as r:
        for raw in r:
            line = raw.decode().strip()
            if line == "event: delta" and first is None:
                first = (time.perf_counter() - t0) * 1000
            if line == "event: final":
                final = (time.perf_counter() - t0) * 1000
                break
    return None if first is None else (first, final)


def teams_posted(url: str, connector: teams.Connector, question: str, i: int) -> float | None:
    connector.calls.clear()
    activity = teams.channel_mention(
        connector.url, question, channel=f"19:bench{i}@thread.tacv2", team="19:t", user=f"u{i}"
    )
    t0 = time.perf_counter()
    with urllib.request.urlopen(post(url + "api/messages", activity), timeout=60) as r:
        r.read()
    [message] = connector.messages()
    card = json.dumps(message.body)
    return None if "closest" in card.lower() else (message.received - t0) * 1000


def teams_streamed(
    url: str, connector: teams.Connector, question: str, i: int
) -> tuple[float, float] | None:
    connector.calls.clear()
    activity = teams.personal_message(connector.url, question, user=f"p{i}")
    t0 = time.perf_counter()
    with urllib.request.urlopen(post(url + "api/messages", activity), timeout=60) as r:
        r.read()
    calls = connector.wait_for(lambda cs: any(c.body.get("type") == "message" for c in cs))
    updates = [
        c
        for c in calls
        if any(e.get("streamType") == "streaming" for e in c.body.get("entities") or [])
    ]
    if not updates:
        return None  # an abstention: nothing was streamed
    return (updates[0].received - t0) * 1000, (calls[-1].received - t0) * 1000


def rounds(url: str, connector: teams.Connector, model: FakeOpenAI, n: int) -> dict:
    out: dict[str, list] = {k: [] for k in ("web posted", "web streamed", "teams posted")}
    out["teams streamed"] = []
    for i in range(n):
        q = QUESTIONS[i % len(QUESTIONS)]
        model.script = [whole()]
        got = {"web posted": web_posted(url, q)}
        model.script = [streamed()]
        got["web streamed"] = web_streamed(url, q)
        model.script = [whole()]
        got["teams posted"] = teams_posted(url, connector, q, i)
        model.script = [streamed()]
        got["teams streamed"] = teams_streamed(url, connector, q, i)
        if any(v is None for v in got.values()):
            continue  # an abstention (no model call) is not counted either way
        for k, v in got.items():
            out[k].append(v)
    return out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    started = datetime.now(UTC)
    for name in APP_ENV:
        os.environ.pop(name, None)  # Teams in emulator mode
    with (
        tempfile.TemporaryDirectory(prefix="kbot-bench-streaming-") as tmp,
        fake_openai() as model,
        teams.connector() as connector,
    ):
        config = parse_config(
            {
                "storage": {"data_dir": str(Path(tmp) / "data")},
                "llm": model.llm_section(cache=False, timeout_s=30),
                "rate_limits": {"per_user": None, "per_channel": None},
                "connectors": [
                    {"name": "sample", "type": "filesystem", "path": str(REPO / "knowledge")}
                ],
            },
            source="bench-streaming",
            base_dir=Path(tmp),
        )
        rt = Runtime(config)
        try:
            log("syncing the sample knowledge")
            [result] = rt.indexer.sync()
            assert result.ok, result.error
            with serve(create_app(rt)) as url:
                rounds(url, connector, model, 1)  # warm-up
                log(f"{args.n} questions, each surface posted and streamed")
                figures = rounds(url, connector, model, args.n)
        finally:
            rt.close()
    for k, v in figures.items():
        log(f"{k}: {v}")
    write_region(args.out, START, END, report(figures, started, result.chunks))
    log(f"wrote {args.out}")


def report(f: dict, started: datetime, chunks: int) -> str:
    facts = machine()
    n = len(f["web posted"])
    rows = []
    for surface in ("web", "teams"):
        posted = f[f"{surface} posted"]
        first = [a for a, _ in f[f"{surface} streamed"]]
        final = [b for _, b in f[f"{surface} streamed"]]
        name = "Web chat" if surface == "web" else "Teams"
        rows.append(
            f"| {name} | posted | {n} | {pct(posted, 50):.0f} ms | {pct(posted, 99):.0f} ms | "
            f"{pct(posted, 50):.0f} ms | {pct(posted, 99):.0f} ms |"
        )
        rows.append(
            f"| {name} | streamed | {n} | {pct(first, 50):.0f} ms | {pct(first, 99):.0f} ms | "
            f"{pct(final, 50):.0f} ms | {pct(final, 99):.0f} ms |"
        )
    web_first = [a for a, _ in f["web streamed"]]
    web_final = [b for _, b in f["web streamed"]]
    teams_first = [a for a, _ in f["teams streamed"]]
    teams_final = [b for _, b in f["teams streamed"]]
    lines = [
        START,
        "## Web chat and Teams: streamed answers (`bench/streaming.py`)",
        "",
        f"Run {started:%Y-%m-%d %H:%M} UTC on {facts['CPU']}, {facts['Cores']}, "
        f"Python {facts['Python']}. The real server over the bundled sample knowledge "
        f"({chunks} chunks) with an `llm:`: a scripted OpenAI-compatible server on 127.0.0.1 "
        f"standing in for a model that takes {FIRST_TOKEN_S * 1000:.0f} ms to its first token "
        f"and {MODEL_S * 1000:.0f} ms in all. One question at a time, {n} each way. "
        "**Posted**: the web chat's `POST /api/ask` to its reply; a Teams channel mention to "
        "the Bot Connector stand-in receiving the card. **Streamed**: `POST /api/ask/stream` "
        "to its first `delta` and its `final` event; a Teams 1:1 message to the first "
        "streaming typing update and to the final message (card, citations, feedback loop).",
        "",
        "| Surface | Mode | n | First text p50 | First text p99 | Final p50 | Final p99 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        f"Of the {len(QUESTIONS)} questions asked in turn, those the sample knowledge does "
        "not answer confidently abstain without a model call and are left out both ways. "
        "In the web chat the first words arrive when the model sends them "
        f"({pct(web_first, 50):.0f} ms at p50, against {pct(f['web posted'], 50):.0f} ms for "
        "the posted answer) and the final answer comes as the posted one does "
        f"({pct(web_final, 50) - pct(f['web posted'], 50):+.0f} ms). Teams shows its "
        'informative update ("Looking that up…") as soon as the message arrives, but is '
        "throttled to one streaming request a second (`teams.stream_update_s`), so its "
        f"first text shows a second after that ({pct(teams_first, 50):.0f} ms), and the "
        "final message waits out the same throttle after the last update: "
        f"{pct(teams_final, 50) - pct(f['teams posted'], 50):+.0f} ms against the posted "
        "card (p50), the price of staying within Teams' limit.",
        END,
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
