"""One answer, three surfaces: a runbook written for GitHub (raw HTML, reference and
relative links, numbered steps with a command) is indexed, asked, and rendered as Slack
mrkdwn and a Teams card. Each must show the steps with their numbers, the command as code
and the links as links, with no markup left over. (The web chat's rendering of the same
runbook is in test_browser.py.)"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from bot.answer.types import Answer, Requester
from bot.chat.slack_blocks import answer_messages
from bot.chat.teams_cards import answer_card
from tests.bot.servers import runbook_connector
from tests.conftest import make_config

DOC = "ops/rotate-signing-key.md"
SITE = "https://git.example.test/runbooks/blob/main/"
# Written the way GitHub-flavoured runbooks are; nothing here comes from the shared corpus.
RUNBOOK = """\
# Rotating the webhook signing key

<details>
<summary>Why we rotate</summary>
The key signs every outgoing webhook.<br>Rotate it every 90 days.
</details>

## Rotation steps

1. Create the new key in the [key console][console].
2. Store it: run `vault kv put secret/webhooks key=@new.pem`.
3. Restart the sender:

   ```
   kubectl rollout restart deploy/webhook-sender
   ```

4. Check the [delivery dashboard](/dashboards/webhooks) shows no failures.
5. Revoke the old key, as [the access runbook](../access/revoke.md#keys) says.

[console]: https://keys.example.test/console
"""
QUESTION = "How do I rotate the webhook signing key?"
RAW = ("<details", "<summary", "<br", "][console]", "[console]:", "](/", "](../", "](#")


@pytest.fixture(scope="module")
def answer(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Answer:
    from bot.runtime import Runtime

    tmp = tmp_path_factory.mktemp("rendering")
    (tmp / "kb" / DOC).parent.mkdir(parents=True)
    (tmp / "kb" / DOC).write_text(RUNBOOK, encoding="utf-8")
    rt = Runtime(make_config(tmp, [runbook_connector(tmp / "kb")]))
    try:
        assert rt.indexer.sync()[0].ok
        reply = rt.answering.ask(QUESTION, Requester(platform="test"))
    finally:
        rt.close()
    assert not reply.abstained and [c.path for c in reply.citations] == [DOC]
    return reply


def test_the_quoted_answer_is_clean_markdown(answer: Answer) -> None:
    text = answer.text
    assert not [r for r in RAW if r in text], text
    # Steps in order, the command whole, links absolute.
    starts = [text.index(f"{n}. ") for n in (2, 3, 4)]
    assert starts == sorted(starts)
    assert "kubectl rollout restart deploy/webhook-sender" in text
    assert "[delivery dashboard](https://git.example.test/dashboards/webhooks)" in text


def _mrkdwn(answer: Answer) -> str:
    blocks = [b for message in answer_messages(answer) for b in message]
    return "\n".join(b["text"]["text"] for b in blocks if b["type"] == "section")


def test_slack_shows_numbered_steps_code_and_links(answer: Answer) -> None:
    text = _mrkdwn(answer)
    assert not [r for r in RAW if r in text], text
    assert re.search(r"^2\. Store it: run `vault kv put secret/webhooks key=@new\.pem`", text, re.M)
    assert "```\nkubectl rollout restart deploy/webhook-sender\n```" in text
    assert "<https://git.example.test/dashboards/webhooks|delivery dashboard>" in text


def test_teams_shows_numbered_steps_code_and_links(answer: Answer) -> None:
    card = answer_card(answer)
    blocks = card["body"]
    prose = "\n".join(b["text"] for b in blocks if b.get("fontType") != "Monospace")
    code = [b["text"] for b in blocks if b.get("fontType") == "Monospace"]
    assert not [r for r in RAW if r in json.dumps(card)], prose
    assert re.search(r"^2\. Store it: run `vault kv put", prose, re.M)
    assert code == ["kubectl rollout restart deploy/webhook-sender"]
    assert "[delivery dashboard](https://git.example.test/dashboards/webhooks)" in prose


# The bundled sample knowledge (knowledge/), as `make run` serves it.
SAMPLE = Path(__file__).resolve().parents[3] / "knowledge"
ROTATE_QUESTION = "How do I rotate the payments API key?"
# Steps 1-5 of its "Mitigation" list, each with its command, in this order.
ROTATE_STEPS = (
    ("1. In the PayFlux dashboard", None),
    ("2. Write the new key to Vault", "vault kv put secret/payments/payflux/api-key"),
    ("3. Force External Secrets to sync", "annotate externalsecret payflux-credentials"),
    ("4. Restart the gateway", "rollout restart deployment/payments-gateway"),
    ("5. Verify", "curl -s localhost:8080/healthz/provider"),
)


@pytest.fixture(scope="module")
def rotation(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Answer:
    from bot.runtime import Runtime

    tmp = tmp_path_factory.mktemp("sample")
    sample = {"name": "knowledge", "type": "filesystem", "path": str(SAMPLE)}
    rt = Runtime(make_config(tmp, [sample]))
    try:
        assert rt.indexer.sync()[0].ok
        reply = rt.answering.ask(ROTATE_QUESTION, Requester(platform="test"))
    finally:
        rt.close()
    assert not reply.abstained
    assert reply.citations[0].path == "runbooks/rotate-payments-api-key.md"
    return reply


def _in_order(text: str, needles: list[str]) -> bool:
    at = [text.find(n) for n in needles]
    return -1 not in at and at == sorted(at)


def _steps_in_order(text: str) -> None:
    needles = [n for step in ROTATE_STEPS for n in step if n]
    assert _in_order(text, needles), text
    assert "…" not in text[text.index("1. In the PayFlux") : text.index("5. Verify")]


def test_the_rotation_question_is_answered_with_its_steps(rotation: Answer) -> None:
    text = rotation.text
    first = text.split("\n", 1)[0]
    assert first == "Mitigation steps, from **Rotating the payments API key** [1]:"
    assert "The rotation steps:" in text  # the line that introduces them comes along
    _steps_in_order(text)
    # Cut between steps, and the rest named.
    assert "Step 7 and the rollback are in [1]." in text
    assert "7. Record the rotation" not in text


def test_slack_shows_the_rotation_steps_with_their_commands(rotation: Answer) -> None:
    text = _mrkdwn(rotation)
    _steps_in_order(text)
    assert (
        "```\nvault kv put secret/payments/payflux/api-key value=- key_id=pk_id_XXXX\n```" in text
    )


def test_teams_shows_the_rotation_steps_with_their_commands(rotation: Answer) -> None:
    blocks = answer_card(rotation)["body"]
    flat = "\n".join(b.get("text", "") for b in blocks)
    _steps_in_order(flat)
    code = [b["text"] for b in blocks if b.get("fontType") == "Monospace"]
    assert code[0].startswith("vault kv put secret/payments/payflux/api-key")
    assert any("rollout restart deployment/payments-gateway" in c for c in code)
