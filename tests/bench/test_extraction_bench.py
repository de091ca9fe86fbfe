"""bench/extraction.py's scoring: a perfect extraction scores 1, chrome lowers precision."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SPEC = importlib.util.spec_from_file_location(
    "extraction_bench", Path(__file__).resolve().parents[2] / "bench" / "extraction.py"
)
assert SPEC and SPEC.loader
bench = importlib.util.module_from_spec(SPEC)
sys.modules[SPEC.name] = bench  # dataclasses look their module up
SPEC.loader.exec_module(bench)

RST = "Rotating keys\n=============\n\nUse :func:`rotate` daily.\n\n.. note::\n\n>>> rotate()\n"


def test_a_perfect_extraction_scores_one_and_chrome_lowers_precision() -> None:
    truth = bench.source_text(RST)
    assert bench.prf("Rotating keys Use rotate daily. >>> rotate()", truth)[2] == 1.0
    p, r, _ = bench.prf(
        "Rotating keys Use rotate daily. >>> rotate() Next topic Quick search", truth
    )
    assert p < 1.0 and r == 1.0
    assert bench.chrome_leaked("Next topic") and not bench.chrome_leaked("Use rotate")


def test_headings_and_code_kept() -> None:
    assert bench.section_titles(RST) == ["Rotating keys"]
    assert bench.headings_kept("# Rotating keys[¶](#k)\n", ["Rotating keys"]) == 1.0
    assert bench.code_kept("```\n>>> rotate()\n```", bench.examples(RST)) == 1.0
    assert bench.code_kept(">>> rotate()", bench.examples(RST)) == 0.0
