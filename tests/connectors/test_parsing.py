"""Parsing real file contents of every supported format into chunker-ready text."""

from __future__ import annotations

import pytest

from connectors.base import DocumentError
from connectors.parsing import file_format, parse

# --- Markdown ---------------------------------------------------------------------------


def test_markdown_front_matter_gives_title_and_url_and_is_not_indexed() -> None:
    raw = (
        b"---\n"
        b"title: Restarting the payment gateway\n"
        b"url: https://wiki.example.com/pay/restart\n"
        b"owner: team-pay\n"
        b"---\n"
        b"# Gateway restart\n\nDrain traffic first.\n"
    )
    p = parse("runbooks/pay-restart.md", raw)
    assert p.title == "Restarting the payment gateway"
    assert p.front_matter["url"] == "https://wiki.example.com/pay/restart"
    assert p.front_matter["owner"] == "team-pay"
    assert p.format == "markdown"
    assert p.text == "# Gateway restart\n\nDrain traffic first."


def test_markdown_crlf_front_matter_is_recognised() -> None:
    p = parse("a.md", b"---\r\ntitle: Windows file\r\n---\r\nBody line\r\n")
    assert p.title == "Windows file"
    assert p.text == "Body line"


def test_markdown_broken_yaml_front_matter_still_indexes_the_body() -> None:
    raw = b"---\ntitle: [unclosed\n  : : bad\n---\n# Real Title\n\nThe body survives.\n"
    p = parse("x.md", raw)
    assert p.front_matter == {}
    assert p.title == "Real Title"
    assert p.text == "# Real Title\n\nThe body survives."


def test_markdown_front_matter_with_an_impossible_date_is_broken_not_fatal() -> None:
    # PyYAML raises ValueError (not YAMLError) while building a date with month 13.
    p = parse("x.md", b"---\ntitle: Dated\ndate: 2024-13-45\n---\nBody text.\n")
    assert p.front_matter == {}
    assert p.text == "Body text."
    assert p.title == "x"


def test_markdown_empty_front_matter_is_dropped() -> None:
    p = parse("x.md", b"---\n---\n# Heading\n\nText.\n\n---\n\nkey: after a rule\n")
    assert p.text == "# Heading\n\nText.\n\n---\n\nkey: after a rule"
    assert p.title == "Heading"


def test_markdown_prose_between_thematic_breaks_is_kept() -> None:
    p = parse("x.md", b"---\nA plain introduction sentence.\n---\n\n# Title\n")
    assert "A plain introduction sentence." in p.text
    assert p.front_matter == {}
    assert p.title == "Title"


def test_markdown_title_falls_back_to_first_h1_then_file_name() -> None:
    p = parse("docs/guide.md", b"Intro line.\n\n## Second level\n\n# The Real One #\n")
    assert p.title == "The Real One"
    p = parse("docs/disk-full_alert.md", b"No heading at all.\n\n## Only H2\n")
    assert p.title == "disk full alert"


def test_markdown_blank_front_matter_title_falls_back_to_h1() -> None:
    p = parse("x.md", b"---\ntitle: '  '\n---\n# From Heading\n")
    assert p.title == "From Heading"


def test_markdown_shell_comment_in_code_fence_is_not_the_title() -> None:
    raw = b"```bash\n# install dependencies\npip install x\n```\n\n# Setup\n\nDone.\n"
    assert parse("setup.md", raw).title == "Setup"
    raw = b"~~~\n# only a comment\n~~~\ntext\n"
    assert parse("notes.md", raw).title == "notes"


def test_broken_markdown_still_parses() -> None:
    raw = (
        b"#No space heading\n"
        b"####### seven hashes\n"
        b"#   \n"
        b"Text before an unclosed fence.\n"
        b"```python\n"
        b"def f():\n"
        b"    return 1\n"
    )
    p = parse("weird.md", raw)
    assert p.title == "weird"
    assert p.text.startswith("#No space heading")
    assert p.text.endswith("    return 1")
    assert "Text before an unclosed fence." in p.text


def test_markdown_bom_and_html_md_suffix() -> None:
    p = parse("guide.html.md", "\ufeff# Größe\n\nÜberblick.\n".encode())
    assert p.title == "Größe"
    assert p.text.startswith("# Größe")
    assert parse("guide.html.md", b"no heading").title == "guide"


# --- HTML -------------------------------------------------------------------------------

PAGE = b"""<!DOCTYPE html>
<html><head><title>On-call guide</title><style>p { color: red }</style></head>
<body>
<header><a href="/">Home</a> Site banner</header>
<nav><ul><li>Menu entry</li></ul></nav>
<!-- internal build note -->
<h1>On-call</h1>
<p>Start with <code>kubectl get pods</code> and   read
   the logs.</p>
<h2>Escalation</h2>
<ol><li>Page the lead</li><li>Open an <b>incident</b></li></ol>
<ul><li>alpha</li><li>beta</li></ul>
<h3>Commands</h3>
<pre><code>systemctl restart web
  --now indented</code></pre>
<table><tr><th>Severity</th><th>Response</th></tr><tr><td>SEV1</td><td>15 min</td></tr></table>
<script>var tracking = "do-not-index";</script>
<footer>Copyright footer text</footer>
</body></html>"""


def test_html_title_and_structure() -> None:
    p = parse("guide.html", PAGE)
    assert p.title == "On-call guide"
    assert p.format == "markdown"
    lines = p.text.splitlines()
    assert "# On-call" in lines
    assert "## Escalation" in lines
    assert "### Commands" in lines
    assert "Start with `kubectl get pods` and read the logs." in lines
    numbered = [x for x in lines if x[:2] in ("1.", "2.")]
    assert numbered == ["1. Page the lead", "2. Open an incident"]
    assert "- alpha" in lines and "- beta" in lines
    assert "| Severity | Response |" in lines
    assert "| SEV1 | 15 min |" in lines
    fence = lines.index("```")
    assert lines[fence : fence + 4] == ["```", "systemctl restart web", "  --now indented", "```"]


def test_html_drops_chrome_scripts_and_comments() -> None:
    text = parse("guide.html", PAGE).text
    for gone in ("Site banner", "Menu entry", "Copyright footer", "do-not-index", "color: red"):
        assert gone not in text
    assert "internal build note" not in text
    assert "On-call guide" not in text  # the <title> is the title, not body text


def test_html_prefers_main_and_falls_back_to_h1_then_name() -> None:
    raw = b"<body><div>Sidebar junk</div><main><h1>Main Heading</h1><p>Body.</p></main></body>"
    p = parse("m.htm", raw)
    assert p.title == "Main Heading"
    assert "Sidebar junk" not in p.text
    assert p.text == "# Main Heading\n\nBody."
    assert parse("plain_page.html", b"<p>just a paragraph</p>").title == "plain page"


def test_html_fragment_title_is_not_repeated_in_text() -> None:
    p = parse("f.html", b"<title>Fragment</title><p>Only this.</p>")
    assert (p.title, p.text) == ("Fragment", "Only this.")


def test_html_nested_too_deeply_is_a_document_error() -> None:
    with pytest.raises(DocumentError) as e:
        parse("deep.html", b"<div>" * 5000 + b"x")
    assert e.value.doc_id == "deep.html"
    assert "nested too deeply" in e.value.reason


# --- reStructuredText -------------------------------------------------------------------

RST = b"""=========
Deploying
=========

Intro paragraph.

Rollback
========

Run this::

    kubectl rollout undo deploy/web
    echo done

Sub step
--------

* first item
* second item

.. include:: /etc/passwd

.. raw:: html

   <p>raw html must not pass</p>
"""


def test_rst_title_sections_and_literal_blocks() -> None:
    p = parse("deploy.rst", RST)
    assert p.title == "Deploying"
    assert p.format == "markdown"
    lines = p.text.splitlines()
    assert lines[0] == "# Deploying"
    assert "## Rollback" in lines
    assert "### Sub step" in lines
    fence = lines.index("```")
    assert lines[fence : fence + 4] == [
        "```",
        "kubectl rollout undo deploy/web",
        "echo done",
        "```",
    ]
    assert "- first item" in lines and "- second item" in lines


def test_rst_include_and_raw_are_not_executed() -> None:
    text = parse("deploy.rst", RST).text
    assert "root:" not in text
    assert "raw html must not pass" not in text


def test_rst_without_sections_uses_the_file_name() -> None:
    p = parse("release_notes.rst", b"Just a paragraph with *unclosed emphasis.\n")
    assert p.title == "release notes"
    assert "Just a paragraph with *unclosed emphasis." in p.text


# --- plain text, unsupported, binary ----------------------------------------------------


def test_plain_text_keeps_text_and_uses_file_name_as_title() -> None:
    p = parse("notes/on-call_tips.txt", b"  # not a heading in text\nline two\n\n")
    assert (p.title, p.format) == ("on call tips", "text")
    assert p.text == "# not a heading in text\nline two"


def test_file_format_by_suffix() -> None:
    assert file_format("a/B.MD") == "markdown"
    assert file_format("x.htm") == "html"
    assert file_format("x.rst") == "rst"
    assert file_format("x.text") == "text"
    assert file_format("image.png") is None
    assert file_format("Makefile") is None
    assert file_format("source/manual/on-call.html.md.erb") == "markdown-erb"
    assert file_format("layout.html.erb") is None


def test_markdown_template_takes_its_heading_from_the_front_matter() -> None:
    # A GOV.UK tech-docs page: the title lives in front matter, the heading prints it.
    raw = (
        b'---\ntitle: Rotate the signing key\nowner_slack: "#platform"\n---\n\n'
        b"# <%= current_page.data.title %>\n\n<%# reviewed yearly %>\n"
        b"Ask <%= current_page.data[:owner_slack] %> first.\n\n"
        b"<%= partial 'warning' %>\n\n1. Create the key.\n2. Revoke the old one.\n"
    )
    p = parse("source/manual/rotate-key.html.md.erb", raw)
    assert (p.title, p.format) == ("Rotate the signing key", "markdown")
    assert p.text.startswith("# Rotate the signing key\n\n")
    assert "Ask #platform first." in p.text
    assert "<%" not in p.text and "partial" not in p.text and "reviewed" not in p.text
    assert p.text.endswith("1. Create the key.\n2. Revoke the old one.")


def test_markdown_template_without_front_matter_title() -> None:
    p = parse("docs/quick-start.md.erb", b"# <%= current_page.data.title %>\n\nBody.\n")
    # The heading printed nothing: it goes, and the title comes from the file name.
    assert (p.title, p.text) == ("quick start", "Body.")


def test_unsupported_type_is_a_document_error() -> None:
    with pytest.raises(DocumentError, match="unsupported file type"):
        parse("diagram.png", b"whatever")


def test_binary_file_is_a_document_error_with_a_reason() -> None:
    with pytest.raises(DocumentError) as e:
        parse("docs/blob.md", b"# Title\n\x00\x01\x02binary")
    assert e.value.doc_id == "docs/blob.md"
    assert "binary" in e.value.reason and "NUL" in e.value.reason
    assert str(e.value).startswith("docs/blob.md: ")


def test_undecodable_bytes_are_a_document_error_naming_the_byte() -> None:
    with pytest.raises(DocumentError) as e:
        parse("latin1.txt", "café".encode("latin-1"))
    assert e.value.reason == "not valid UTF-8 text (byte 3), skipped"


def test_oversized_file_is_a_document_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("connectors.parsing.MAX_FILE_BYTES", 10)
    with pytest.raises(DocumentError, match="over the 10 limit"):
        parse("big.txt", b"x" * 11)
