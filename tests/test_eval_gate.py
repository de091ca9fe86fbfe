"""The quality regression gate: `kbot eval` on the labeled dev set must not fall below
the committed baseline (tests/eval_baseline.json) by more than a small margin."""

from __future__ import annotations

import json
from pathlib import Path

from bot.review.evaluation import load_questions, run, summarize
from tests.conftest import DEV_QUESTIONS, need

BASELINE = Path(__file__).parent / "eval_baseline.json"
# Shares may drop by at most this much (one question of 52 is ~0.019).
SHARE_MARGIN = 0.02
# Abstention is measured on 8 unanswerable questions: one flip is 0.125, and a question
# right at the threshold may flip with the vector index's build. Two flips fail.
ABSTAIN_MARGIN = 0.13
# Context and answer lengths may grow by at most this factor: longer is costlier to read.
LENGTH_SLACK = 1.15
LOWER_IS_BETTER = {"false_abstain"}
LENGTHS = {"context_chars@3", "answer_chars"}


def test_dev_set_quality_does_not_regress(corpus_runtime):
    need(DEV_QUESTIONS.is_file(), f"the labeled questions are missing at {DEV_QUESTIONS}")
    baseline = {k: v for k, v in json.loads(BASELINE.read_text()).items() if not k.startswith("_")}
    result = summarize(run(corpus_runtime, load_questions(DEV_QUESTIONS)))
    worse = []
    for measure, base in baseline.items():
        got = result[measure]
        if measure in LENGTHS:
            ok = got <= base * LENGTH_SLACK
        elif measure in LOWER_IS_BETTER:
            ok = got <= base + SHARE_MARGIN
        elif measure == "abstain_accuracy":
            ok = got >= base - ABSTAIN_MARGIN
        else:
            ok = got >= base - SHARE_MARGIN
        if not ok:
            worse.append(f"{measure}: {got} (baseline {base})")
    assert not worse, "quality regressed on the dev set:\n" + "\n".join(worse)
