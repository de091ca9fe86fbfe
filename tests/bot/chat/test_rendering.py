"""One answer, three surfaces: a runbook written for GitHub (raw HTML, reference and
relative links, numbered steps with a command) is indexed, asked, and rendered as Slack
mrkdwn and a Teams card. Each must show the steps with their numbers, the command as code
and the links as links, with no markup left over. (The web chat's rendering of the same
runbook is in test_browser.py.)"""

from __future__ import annotations

import json
import re
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
