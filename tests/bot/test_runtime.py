"""The runtime's view of the configured audiences, as the admin tools (eval, the CLI) use it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bot.review.evaluation import parse_questions, run
from tests.conftest import make_config
from tests.connectors.fake_confluence import CLOUD_API_TOKEN, CLOUD_EMAIL, FakeConfluence


@pytest.fixture
def confluence() -> Iterator[FakeConfluence]:
    """A Confluence Cloud stand-in whose SEC space holds the incident page."""
    fake = FakeConfluence("cloud").start()
    fake.add_space("OPS", "Operations")
    fake.add_space("SEC", "Security")
    fake.add_page("OPS", "Restart the payments API", "<p>Run zz-restart-payments twice.</p>")
    fake.incident = fake.add_page(  # type: ignore[attr-defined]
        "SEC", "Incident response", "<h2>First hour</h2><p>Open a zz-sec-bridge call.</p>"
    ).id
    yield fake
    fake.stop()


def test_eval_sees_the_audiences_of_confluence_spaces(tmp_path, runtime_factory, confluence):
    block = {
        "name": "wiki",
        "type": "confluence",
        "base_url": confluence.site,
        "space_keys": ["OPS", "SEC"],
        "email": CLOUD_EMAIL,
        "api_token": CLOUD_API_TOKEN,
        "audience": "ops",
        "space_audiences": {"SEC": "security"},
    }
    rt = runtime_factory(make_config(tmp_path, [block]))
    assert rt.all_audiences == {"public", "ops", "security"}
    [result] = rt.indexer.sync()
    assert result.ok and result.added == 2
    line = (
        '{"id": "q1", "question": "Which call do I open in the first hour of an incident?", '
        f'"relevant": ["{confluence.incident}"], "answer_keywords": ["zz-sec-bridge"], '
        '"kind": "lookup"}'
    )
    [outcome] = run(rt, parse_questions([line]))
    # The SEC page has the space's audience: eval, which reads as every audience, finds it.
    assert not outcome.abstained
    assert outcome.cited[0] == confluence.incident
    assert outcome.answer_keyword_hits == ("zz-sec-bridge",)
