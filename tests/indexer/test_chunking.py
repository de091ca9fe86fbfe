"""Heading-aware chunking."""

from __future__ import annotations

from datetime import UTC, datetime

from connectors.base import Document
from indexer.chunking import Chunker, sections

RUNBOOK = """# DiskFull

## Meaning

The disk is nearly full.

## Diagnosis

### Step 1

Look at usage:

```shell
# this comment is not a heading
df -h /var
    indented continuation stays indented
```

### Step 2

Find big files with `du`.

## Mitigation

### Clean up

Delete old logs.
"""


def doc(text: str, fmt: str = "markdown", title: str = "DiskFull") -> Document:
    return Document(
        "c", "runbooks/disk.md", title, "https://x/disk", text, datetime.now(UTC), "ops", fmt
    )


def test_small_runbook_is_one_chunk_with_its_structure():
    [chunk] = Chunker(chunk_size=2000).split(doc(RUNBOOK))
    assert chunk.id == "c:runbooks/disk.md:0"
    assert chunk.heading_path == ("DiskFull",)
    assert "    indented continuation stays indented" in chunk.text
    assert chunk.audience == "ops" and chunk.url == "https://x/disk"
    assert chunk.embedding_text().startswith("DiskFull\n\n")


def test_sections_carry_their_heading_path():
    found = {sec.path: sec.text for sec in sections(RUNBOOK, "DiskFull")}
    assert ("DiskFull", "Diagnosis", "Step 1") in found
    assert ("DiskFull", "Diagnosis", "Step 2") in found
    # A heading inside a code fence is code, not a section.
    assert not any("this comment" in " ".join(p) for p in found)
    # "## Mitigation" has no text of its own: it opens the section of "### Clean up".
    clean = found[("DiskFull", "Mitigation", "Clean up")]
    assert clean.startswith("## Mitigation\n\n### Clean up")
    assert ("DiskFull", "Mitigation") not in found


def test_packed_sections_share_their_common_heading():
    text = "# T\n\n## A\n\n" + "alpha " * 50 + "\n\n## B\n\n### B1\n\nbeta\n\n### B2\n\ngamma\n"
    a, b = Chunker(chunk_size=320, chunk_overlap=0).split(doc(text, title="T"))
    assert a.heading_path == ("T", "A")
    assert b.heading_path == ("T", "B") and "beta" in b.text and "gamma" in b.text


def test_each_section_is_its_own_chunk_when_packing_would_overflow():
    chunks = Chunker(chunk_size=160, chunk_overlap=0).split(doc(RUNBOOK))
    assert [c.heading for c in chunks][:2] == [
        "DiskFull › Meaning",
        "DiskFull › Diagnosis › Step 1",
    ]


def test_long_sections_are_split_within_the_size():
    body = "\n\n".join(f"Paragraph {i} " + "word " * 40 for i in range(30))
    chunks = Chunker(chunk_size=500, chunk_overlap=50).split(
        doc(f"# T\n\n## Long\n\n{body}", title="T")
    )
    assert len(chunks) > 5
    assert all(len(c.text) <= 500 for c in chunks)
    assert all(c.heading_path == ("T", "Long") for c in chunks)
    # The headings open the first piece instead of making a chunk of their own.
    assert chunks[0].text.startswith("# T\n\n## Long\n\nParagraph 0")
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_plain_text_is_split_without_headings():
    text = "Line about wifi.\n\n# not a heading in a text file\n" * 3
    [chunk] = Chunker().split(doc(text, fmt="text", title="Office FAQ"))
    assert chunk.heading_path == ("Office FAQ",)


def test_empty_document_has_no_chunks():
    assert Chunker().split(doc("   \n\n")) == []


def test_chunk_settings_change_the_signature():
    assert Chunker(1000, 100).signature != Chunker(800, 100).signature


def _fences(text: str) -> list[str]:
    return [ln.strip() for ln in text.split("\n") if ln.lstrip().startswith(("```", "~~~"))]


def test_a_code_block_split_across_chunks_is_closed_and_reopened():
    script = "\n".join(f"kubectl -n ops delete pod worker-{i} --grace-period=30" for i in range(40))
    text = (
        "# Drain\n\n## Steps\n\nRun this:\n\n```shell\n"
        + script
        + "\n```\n\nThen check the queue length on the dashboard.\n"
    )
    chunks = Chunker(chunk_size=600, chunk_overlap=60).split(doc(text, title="Drain"))
    assert len(chunks) > 3
    for c in chunks:
        fences = _fences(c.text)
        assert len(fences) % 2 == 0, c.text  # every block it opens, it closes
        # Every command line is inside a block, in every chunk.
        inside = False
        for line in c.text.split("\n"):
            if line.lstrip().startswith("```"):
                inside = not inside
            elif line.startswith("kubectl"):
                assert inside, c.text
    # A chunk that starts inside the block reopens it with the block's language.
    assert all(c.text.startswith("```shell") for c in chunks[1:-1])
    # The prose after the block is prose again, not inside an unterminated block.
    last = chunks[-1].text
    before = last[: last.index("Then check the queue length")]
    assert len(_fences(before)) % 2 == 0
    # Nothing is lost: every command is in some chunk.
    assert all(any(line in c.text for c in chunks) for line in script.split("\n"))


def test_an_overlap_starts_at_a_line_or_sentence_not_mid_word():
    para = " ".join(f"Sentence {i} says the cluster needs attention now." for i in range(60))
    chunks = Chunker(chunk_size=400, chunk_overlap=120).split(doc(f"# T\n\n{para}", title="T"))
    assert len(chunks) > 5
    for c in chunks[1:]:
        assert c.text.startswith("Sentence"), c.text[:60]
    # Still every sentence is kept.
    for i in range(60):
        assert any(f"Sentence {i} says" in c.text for c in chunks)
