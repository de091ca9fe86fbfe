"""The simulated model of the streaming benchmarks (bench/slack.py, bench/streaming.py):
the scripted OpenAI-compatible server of tests/bot/fake_openai.py answering the same
questions the same way, its first token after ``FIRST_TOKEN_S`` and its whole answer after
``MODEL_S``, so the two benchmarks' figures compare."""

from __future__ import annotations

from tests.bot.fake_openai import Step, completion

QUESTIONS = [
    "How do I rotate the API key?",
    "What should I do when the disk is full?",
    "How do I get access to the VPN?",
    "How do I deploy a hotfix?",
    "Who do I call when the database is down?",
]
FIRST_TOKEN_S = 0.3
MODEL_S = 1.5
MODEL_ANSWER = (
    "Follow the runbook's steps in order [1]. Check each step's result before the next one, "
    "and if a step fails, stop and ask in the owning team's channel with what you ran [1]."
)


def whole() -> Step:
    """The model's answer in one piece, after MODEL_S."""
    step = completion(MODEL_ANSWER)
    step.delay_s = MODEL_S
    return step


def streamed() -> Step:
    """The model's answer streamed: its first token after FIRST_TOKEN_S, the rest by MODEL_S."""
    step = completion(MODEL_ANSWER)
    step.delay_s, step.pause_at, step.pause_s = FIRST_TOKEN_S, 4, MODEL_S - FIRST_TOKEN_S
    return step
