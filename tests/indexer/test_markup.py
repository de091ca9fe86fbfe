"""Markdown made plain before chunking: HTML, reference links, relative links, images."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from indexer.markup import clean_markdown, resolve

WEB = "https://docs.example.com/runbooks/payments/rotate-key.md"


def test_details_becomes_its_text_and_the_summary_a_line_of_its_own() -> None:
    text = (
        "<details>\n<summary>Full <b>context</b></summary>\n\nThe key is 90 days old.\n</details>"
    )
    assert clean_markdown(text) == "Full context\n\nThe key is 90 days old."


def test_br_img_anchor_code_and_entities() -> None:
    text = (
        'One<br>two<br/>three. <img src="a.png" alt="Architecture"> <img src="b.png"> '
        '<a href="https://x.example.com/">X</a> <code>a &amp;&amp; b</code> &nbsp;Q&amp;A'
    )
    assert clean_markdown(text) == (
        "One\ntwo\nthree. Architecture  [X](https://x.example.com/) `a && b`  Q&A"
    )


def test_a_break_inside_a_table_row_keeps_the_row() -> None:
    assert clean_markdown("| a | b<br>c |\n|---|---|") == "| a | b c |\n|---|---|"


def test_an_html_table_becomes_rows() -> None:
    text = (
        "Before.\n\n<table><tr><th>Env</th><th>Key</th></tr>\n"
        "<tr><td>prod</td><td>k1</td></tr></table>"
    )
    assert clean_markdown(text) == "Before.\n\n| Env | Key |\n| prod | k1 |"


def test_placeholders_in_prose_are_not_taken_for_html() -> None:
    text = "Run kubectl logs <pod> -n <namespace>, then a < b > c."
    assert clean_markdown(text) == text


def test_reference_links_resolve_from_the_documents_own_definitions() -> None:
    text = (
        "Open the [Alertmanager UI][link-15], the [Runbook][] and [Grafana].\n"
        "An [undefined][nowhere] reference keeps its text.\n\n"
        "[link-15]: https://am.example.com/#/silences 'Alertmanager'\n"
        "[runbook]: <https://wiki.example.com/runbook>\n"
        "[Grafana]: /grafana\n"
    )
    assert clean_markdown(text, WEB) == (
        "Open the [Alertmanager UI](https://am.example.com/#/silences), the "
        "[Runbook](https://wiki.example.com/runbook) and "
        "[Grafana](https://docs.example.com/grafana).\n"
        "An undefined reference keeps its text."
    )


def test_footnotes_and_checkboxes_are_not_reference_links() -> None:
    text = "- [ ] done yet?\n- [x] done\n\nSee note[^1].\n\n[^1]: The note."
    assert clean_markdown(text) == text


def test_relative_links_resolve_against_a_web_address() -> None:
    text = "See [access](#production-deploy-access), [manual](/manual/x) and [b](../b.md)."
    assert clean_markdown(text, WEB) == (
        "See [access](https://docs.example.com/runbooks/payments/rotate-key.md"
        "#production-deploy-access), [manual](https://docs.example.com/manual/x) and "
        "[b](https://docs.example.com/runbooks/b.md)."
    )


def test_without_a_web_address_a_relative_link_keeps_its_text_only() -> None:
    text = "See [access](#access), [b](../b.md) and [site](https://example.com/a)."
    assert clean_markdown(text, "file:///srv/kb/a.md") == (
        "See access, b and [site](https://example.com/a)."
    )


def test_images_become_their_alt_text() -> None:
    assert clean_markdown("![Flow of a deploy](img/flow.png) and ![x][logo]\n\n[logo]: l.png") == (
        "Flow of a deploy and x"
    )


def test_code_blocks_and_spans_are_left_as_written() -> None:
    text = (
        "Use `<br>` and `[a][b]`.\n\n```html\n<details><summary>S</summary></details>\n"
        "[a](#b)\n```\n\n~~~\n<br>\n~~~\n\n[b]: https://b.example.com/"
    )
    assert clean_markdown(text, WEB) == text.removesuffix("\n\n[b]: https://b.example.com/")


def test_comments_go() -> None:
    assert clean_markdown("a <!-- hidden\nnote --> b") == "a  b"


def test_resolve() -> None:
    assert resolve("mailto:ops@example.com", "") == "mailto:ops@example.com"
    assert resolve("javascript:alert(1)", WEB) is None
    assert resolve("//cdn.example.com/x", "") == "https://cdn.example.com/x"
    assert resolve("", WEB) is None


_TOKENS = st.sampled_from(
    [
        "text ",
        "<br>",
        "<details>",
        "</details>",
        "<summary>s</summary>",
        "[a][r]",
        "[r]",
        "[x](#y)",
        "![i](p.png)",
        "`<b>`",
        "&amp;",
        "<pod>",
        "\n",
        "\n\n",
        "| c<br>d |",
        "\n```\n<br> [a](#b)\n```\n",
        "\n[r]: /ref\n",
        "<table><tr><td>1</td></tr></table>",
        "{{< tabpane text=true >}}",
        "{{% tab Linux %}}",
        "{{% /tab %}}",
        "{{% param vers %}}",
        "\n## H {#h}\n",
        "\n[q]:\n  https://x.example/q\n",
        "[q]",
    ]
)


@given(st.lists(_TOKENS, max_size=30).map("".join), st.sampled_from([WEB, ""]))
def test_cleaning_twice_changes_nothing_more(text: str, url: str) -> None:
    once = clean_markdown(text, url)
    assert clean_markdown(once, url) == once


@given(st.lists(_TOKENS, max_size=30).map("".join))
def test_no_raw_markup_is_left_outside_code(text: str) -> None:
    cleaned = clean_markdown(text, WEB)
    outside = [
        part for i, part in enumerate(cleaned.split("```")) if i % 2 == 0
    ]  # fenced code alternates with prose
    for part in outside:
        prose = part.replace("`<b>`", "")
        assert "<br>" not in prose and "<details>" not in prose and "<table>" not in prose
        assert "](#" not in prose
        if "\n[r]: /ref\n" in text:  # defined: every use of it became a link
            assert "[r]" not in prose.replace("[r](", "")
        assert "{{<" not in prose and "{{%" not in prose and "{#h}" not in prose
        assert "[q]:" not in prose


def test_a_link_whose_text_wraps_onto_the_next_line_is_resolved() -> None:
    text = "Unlike the [emergency\nbanner](/manual/emergency.html), it shows 3 times."
    assert clean_markdown(text, WEB) == (
        "Unlike the [emergency\nbanner](https://docs.example.com/manual/emergency.html), "
        "it shows 3 times."
    )
    assert clean_markdown(text) == "Unlike the emergency\nbanner, it shows 3 times."


def test_hugo_shortcodes_and_heading_ids_are_made_plain_outside_code() -> None:
    text = (
        "## DEB installation {#deb}\n\n"
        "{{< tabpane text=true >}} {{% tab AMD64 %}}\n\n"
        "Download version {{% param vers %}} first.\n\n"
        "```sh\nwget x/{{% param vers %}}/otelcol.deb\n```\n\n"
        "{{% /tab %}} {{< /tabpane >}}\n\n{#configuring}\n\n## Configuring"
    )
    assert clean_markdown(text) == (
        "## DEB installation\n\n**AMD64**\n\nDownload version <vers> first.\n\n"
        "```sh\nwget x/{{% param vers %}}/otelcol.deb\n```\n\n## Configuring"
    )


def test_a_definition_with_its_address_on_the_next_line_is_one() -> None:
    text = "See the [releases][] page.\n\n[releases]:\n  https://example.com/releases\n"
    assert clean_markdown(text) == "See the [releases](https://example.com/releases) page."
    # A label alone, with text after it, stays text.
    assert clean_markdown("[note]:\nnot an address") == "[note]:\nnot an address"
