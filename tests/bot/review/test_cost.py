"""`kbot cost`: monthly projections from the model calls in the query log, through the real
CLI over a real database."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.cli import cli
from bot.review.cost import Calls, project
from config.models import DEFAULT_PRICES
from db import Database
from db.models import QueryRecord, utcnow
from tests.conftest import make_config

# (platform, input, output, cached) of logged model calls; None tokens: no call was made.
TRAFFIC = [
    ("slack", 1000, 100, 0),
    ("slack", 2000, 200, 1000),
    ("teams", 3000, 300, 0),
    ("web", None, None, None),  # an extractive answer or a cache hit
    ("eval", 50_000, 5000, 0),  # eval runs are not traffic
]


def write_config(tmp_path: Path, llm: str = "") -> Path:
    path = tmp_path / "kbot.yaml"
    path.write_text(f"storage:\n  data_dir: {tmp_path / 'data'}\n{llm}", encoding="utf-8")
    return path


def log_calls(tmp_path: Path, calls: list[tuple[str, int | None, int | None, int | None]]) -> None:
    db = Database(f"sqlite:///{tmp_path / 'data' / 'kbot.db'}")
    db.migrate()
    with db.session() as s:
        for platform, i, o, c in calls:
            s.add(
                QueryRecord(
                    id=uuid.uuid4().hex,
                    created_at=utcnow(),
                    platform=platform,
                    question="q",
                    answer="a",
                    abstained=False,
                    citations=[],
                    retrieved=[],
                    latency_ms={},
                    input_tokens=i,
                    output_tokens=o,
                    cached_tokens=c,
                )
            )
    db.dispose()


def cost(tmp_path: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--config", str(tmp_path / "kbot.yaml"), "cost", *args])
    return result.exit_code, result.output


def test_the_projection_prices_each_logged_call_per_model(tmp_path: Path) -> None:
    calls = Calls("traffic", [(1000, 100, 0), (2000, 200, 1000), (3000, 300, 0)])
    result = project(make_config(tmp_path), calls, 1000, ["gpt-4o-mini", "gpt-4o"])
    mini, big = result["models"]
    # gpt-4o-mini: 0.15 in, 0.075 cached, 0.60 out per million tokens.
    per_call = [
        (1000 * 0.15 + 100 * 0.6) / 1e6,
        (1000 * 0.15 + 1000 * 0.075 + 200 * 0.6) / 1e6,
        (3000 * 0.15 + 300 * 0.6) / 1e6,
    ]
    assert mini["model"] == "gpt-4o-mini"
    assert mini["p50_usd_per_request"] == pytest.approx(sorted(per_call)[1])
    # p95 of three values interpolates between the second and the third.
    p95 = sorted(per_call)[1] + (sorted(per_call)[2] - sorted(per_call)[1]) * 0.9
    assert mini["p95_usd_per_request"] == pytest.approx(p95)
    assert mini["monthly_usd_p50"] == round(sorted(per_call)[1] * 1000 * 30, 2)
    assert mini["monthly_usd_p95"] == round(p95 * 1000 * 30, 2)
    assert big["p50_usd_per_request"] > mini["p50_usd_per_request"] * 10
    assert result["tokens_per_request"]["input"]["p50"] == 2000


def test_kbot_cost_json_projects_from_traffic_not_eval_runs(tmp_path: Path) -> None:
    write_config(tmp_path, "llm:\n  provider: openai\n  model: gpt-4o-mini\n")
    log_calls(tmp_path, TRAFFIC)
    code, out = cost(tmp_path, "--requests-per-day", "500", "--json")
    assert code == 0, out
    result = json.loads(out)
    assert (result["source"], result["calls"]) == ("traffic", 3)
    names = [m["model"] for m in result["models"]]
    # The configured model first, then every model with a built-in price, side by side.
    assert names[0] == "gpt-4o-mini"
    assert set(DEFAULT_PRICES) <= set(names)
    for m in result["models"]:
        assert set(m) == {
            "model",
            "p50_usd_per_request",
            "p95_usd_per_request",
            "monthly_usd_p50",
            "monthly_usd_p95",
        }
        assert 0 < m["p50_usd_per_request"] <= m["p95_usd_per_request"]
    # The 50k-token eval call is not in the traffic's p95.
    assert result["tokens_per_request"]["input"]["p95"] < 3000


def test_without_traffic_an_eval_run_is_used(tmp_path: Path) -> None:
    write_config(tmp_path)
    log_calls(tmp_path, [("eval", 4000, 400, 0), ("web", None, None, None)])
    code, out = cost(tmp_path, "--requests-per-day", "100", "--model", "claude-3-5-haiku")
    assert code == 0, out
    assert "1 logged model calls (eval)" in out
    # claude-3-5-haiku: 0.80 in, 4.00 out per million: 0.0048 per request, 14.40 a month.
    assert "claude-3-5-haiku" in out
    assert "0.004800" in out and "14.40" in out


def test_no_logged_calls_and_unknown_models_are_explained(tmp_path: Path) -> None:
    write_config(tmp_path)
    log_calls(tmp_path, [("web", None, None, None)])
    code, out = cost(tmp_path, "--requests-per-day", "100")
    assert code != 0
    assert "no model calls" in out and "kbot eval" in out

    log_calls(tmp_path, [("slack", 10, 10, 0)])
    code, out = cost(tmp_path, "--requests-per-day", "100", "--model", "my-llama")
    assert code != 0
    assert "'my-llama'" in out and "llm.prices" in out
