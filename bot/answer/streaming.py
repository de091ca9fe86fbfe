"""A streamed answer, as ``AnsweringService.stream`` yields it: the model's text piece by
piece (``Delta``), then the answer as logged (``Final``).

Validation runs on the complete text, so what was streamed is provisional: an adapter
shows the deltas as they come and, at ``Final``, shows ``Final.answer`` in their place
(its citations renumbered, or the extractive fallback when ``replaced``, with
``Final.note`` saying why). A streamed message is never left half-written.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.answer.types import Answer

# What the user reads above the extractive fallback that replaced a streamed answer.
NOTES = {
    "timeout": "The generated answer took too long, so it was stopped; "
    "this answer is quoted from the sources instead.",
    "truncated": "The generated answer was cut off; this answer is quoted from the sources "
    "instead.",
    "cannot_answer": "The model found no answer in the sources.",
}
NOTE = "The generated answer could not be checked against its sources, so it was replaced; "
NOTE += "this answer is quoted from them instead."


@dataclass(frozen=True)
class Delta:
    """The next piece of the model's answer text."""

    text: str


@dataclass(frozen=True)
class Final:
    """The answer as logged (validated generated text, or the extractive fallback)."""

    answer: Answer
    # True: what was streamed must be replaced by answer.text (validation failed, the
    # model timed out or failed mid-stream).
    replaced: bool

    @property
    def note(self) -> str | None:
        """Why the streamed text was replaced, for the user; None when it was not."""
        if not self.replaced:
            return None
        return NOTES.get(self.answer.fallback_reason or "", NOTE)


Event = Delta | Final
