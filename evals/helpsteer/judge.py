"""The HelpSteer attribute judge: an LLM rates a response's five attributes 0-4 in one JSON object.

The rubric restates HelpSteer's annotation guidelines (Wang et al. 2023, arXiv:2311.09528, section 2) in
our own words: the same five attributes on the same 0-4 scales (HelpSteer calls higher better for every
attribute; for verbosity higher means *more detail* relative to what the prompt asks). The judge goes through
:class:`metis_pytest.judge.JudgeClient`: a JSON contract (:class:`AttributeRatings`, integers 0-4, every
attribute present), corrective re-asks on invalid replies, a disk cache keyed by judge model and prompt
version, and the model and ``PROMPT_VERSION`` recorded with every score. A judge that never answers in
the contract gives an invalid verdict, never a rating.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from metis_pytest.judge import JudgeClient, JudgePrompt, Verdict

from .dataset import ATTRIBUTES

__all__ = ["ATTRIBUTE_JUDGE", "PROMPT_VERSION", "AttributeRatings", "rate"]

PROMPT_VERSION = "1.0.0"


def _rating(description: str) -> Any:
    return Field(ge=0, le=4, description=description)


class AttributeRatings(BaseModel):
    """Five integer ratings 0-4; a missing attribute, a non-integer, a value out of range or an extra key is refused."""

    model_config = ConfigDict(extra="forbid", strict=True)

    helpfulness: int = _rating("Overall helpfulness of the response to the prompt.")
    correctness: int = _rating("Inclusion of all pertinent facts without errors.")
    coherence: int = _rating("Consistency and clarity of expression.")
    complexity: int = _rating("Intellectual depth required to write the response.")
    verbosity: int = _rating("Amount of detail relative to what the prompt asks for.")

    def as_dict(self) -> dict[str, int]:
        return {name: int(getattr(self, name)) for name in ATTRIBUTES}


ATTRIBUTE_JUDGE = JudgePrompt(
    name="helpsteer_attributes",
    version=PROMPT_VERSION,
    system=(
        "You rate one assistant response to a user prompt on five attributes, each an integer from 0 to 4, "
        "on the scales HelpSteer's annotators used.\n\n"
        "- helpfulness: how well the response meets the prompt's needs overall. 0 = not at all, 4 = fully.\n"
        "- correctness: whether it includes the pertinent facts and nothing false. 0 = wrong or irrelevant, "
        "4 = entirely correct and complete.\n"
        "- coherence: how clear and self-consistent the writing is. 0 = incomprehensible, 4 = perfectly clear.\n"
        "- complexity: the intellectual depth it takes to write the response. 0 = anyone who speaks the "
        "language could write it, 1 = basic schooling, 2 = high school, 3 = university study, "
        "4 = deep expertise in the field.\n"
        "- verbosity: the amount of detail relative to what the prompt asks for. 0 = terse, far less than "
        "asked, 2 = about as much as asked, 4 = lengthy, far more than asked.\n\n"
        "Judge only the response shown."
    ),
    user="Prompt:\n<<<\n${prompt}\n>>>\n\nResponse:\n<<<\n${response}\n>>>",
)


async def rate(judge: JudgeClient, prompt: str, response: str) -> Verdict[AttributeRatings]:
    """The judge's verdict on ``response``; ``verdict.data`` holds the ratings only when it is valid."""
    return await judge.judge(ATTRIBUTE_JUDGE, {"prompt": prompt, "response": response}, AttributeRatings)
