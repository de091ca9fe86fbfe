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
