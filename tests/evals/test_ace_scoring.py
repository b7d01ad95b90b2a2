"""Table tests for the ACE grader (``evals/ace/scoring.py``) and its judge prompts (``evals/ace/prompts.py``).

ACE: Mercor's AI Consumer Index (arXiv:2512.04921); official rules from Mercor-Intelligence/apex-evals
``ace/harness/autograder.py``. The judge is scripted (replies looked up by prompt name and criterion
text, parsed against the real schemas, prose -> invalid) and pages come from a dict; nothing touches
the network.

Run: ``pytest tests/evals/test_ace_scoring.py``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, replace
from typing import Any

import pytest

from evals.ace import prompts
from evals.ace.scoring import (
    AceResult,
    extract_urls,
    link_mode,
    normalize_url,
    route_of,
    score_task,
)
from metis_pytest.judge import JudgePrompt, Verdict, parse_verdict
from metis_pytest.registry import ScoreResult

JUDGE_MODEL = "openai/judge-test-1"

# --------------------------------------------------------------------------- local stand-ins


@dataclass(frozen=True)
class Criterion:
    id: int
    description: str
    hurdle: bool = False
    grounded: bool = False
    criteria_type: str = "Other"
    is_link: bool = False
    shop_vs_product: str | None = None


@dataclass(frozen=True)
class Task:
    domain: str
    task_id: int
    prompt: str
    workflow: str
    criteria: tuple[Criterion, ...]


@dataclass(frozen=True)
class Page:
    url: str
    title: str
    content: str


class ToolError(Exception):
    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def _key(name: str, variables: dict[str, str]) -> str:
    if name in ("ace_recommendations", "ace_source_map"):
        return "task"
    if name == "ace_product_links":
        return variables["product"]
    if name.startswith("ace_link_"):
        return variables["url"]
    if name == "ace_stage2":
        return f"{variables['criterion']} | {variables['recommendation']}"
    return variables["criterion"]


class ScriptedJudge:
    """Replies from a table ``{(prompt name, key): raw reply or Verdict}``, parsed like JudgeClient."""

    def __init__(self, table: dict[tuple[str, str], Any]) -> None:
        self.table = table
        self.calls: list[tuple[str, str]] = []
        self.variables: list[dict[str, str]] = []

    async def judge(self, prompt: JudgePrompt, variables: dict[str, str], schema: type) -> Verdict:
        prompt.render(variables)  # every placeholder must be supplied
        key = (prompt.name, _key(prompt.name, variables))
        self.calls.append(key)
        self.variables.append(dict(variables))
        if key not in self.table:
            raise AssertionError(f"unscripted judge call {key}")
        reply = self.table[key]
        if isinstance(reply, Verdict):
            return reply
        common = {"judge_model": JUDGE_MODEL, "prompt_name": prompt.name, "prompt_version": prompt.version}
        try:
            data = parse_verdict(reply, schema)
        except ValueError as exc:
            return Verdict(valid=False, data=None, raw=reply, error=f"no valid verdict after 3 replies: {exc}",
                           retryable=True, attempts=3, **common)
        return Verdict(valid=True, data=data, raw=reply, error=None, retryable=False, attempts=1, **common)


class FakePages:
    def __init__(self, pages: dict[str, Any]) -> None:
        self.pages = pages
        self.fetched: list[str] = []

    async def fetch(self, url: str) -> Page:
        self.fetched.append(url)
        if url not in self.pages:
            raise AssertionError(f"unexpected fetch {url}")
        value = self.pages[url]
        if isinstance(value, Exception):
            raise value
        return value


def refused(name: str) -> Verdict:
    return Verdict(valid=False, data=None, raw=None, error="judge request failed: HTTP 400 Bad Request",
                   retryable=False, judge_model=JUDGE_MODEL, prompt_name=name, prompt_version="1.0.0",
                   attempts=1)


# --------------------------------------------------------------------------- the shopping fixture

QUERY = "Recommend a phone under £58 with 4 GB of RAM or more, and give me purchase links."
RESPONSE = (
    "Here are two phones under £58:\n"
    "1. **Acme Phone X** - £55, 6 GB RAM. Buy it here: https://shop.example/acme-x.\n"
    "2. **Beta Phone 2** - £57, 4 GB RAM. [Buy](https://store.example/beta-2?utm_source=openai)\n"
)
SOURCES = (
    Page("https://review.example/acme", "Acme Phone X review", "The Acme Phone X sells for £55 and has 4 GB of RAM."),
    Page("https://store.example/beta-2", "Beta Phone 2", "Beta Phone 2: £57, 6 GB RAM, 128 GB storage."),
)
ACME_URL = "https://shop.example/acme-x"
BETA_URL = "https://store.example/beta-2?utm_source=openai"
ACME_PAGE = Page(ACME_URL, "Acme Phone X | Shop",
                 "Acme Phone X. Price £55. 4 GB RAM, 128 GB storage, 5,200 mAh battery, 6.5 inch screen. Add to cart. "
                 "Free delivery.")
BETA_PAGE = Page("https://store.example/beta-2", "Beta Phone 2 | Store",
                 "Beta Phone 2. Price £57. 6 GB RAM, 128 GB storage, 32 MP camera, 6.1 inch screen. Buy now. In stock, "
                 "ships today.")

C_PRICE = "Recommends only phones that cost less than £58"
C_RAM = "At least one recommended phone has 6 GB of RAM"
C_COUNT = "Recommends at least one phone"
C_LINK = "Provides a purchase link for each recommended phone"

PRICE = Criterion(1, C_PRICE, hurdle=True, grounded=True, criteria_type="Meets pricing requirements/gives price")
RAM = Criterion(2, C_RAM, grounded=True, criteria_type="Meets product/vendor feature")
COUNT = Criterion(3, C_COUNT, criteria_type="Meets quantity requirement")
LINK = Criterion(4, C_LINK, is_link=True, grounded=True, criteria_type="Provides link(s)",
                 shop_vs_product="Product")

REC_BOTH = '{"recommendations": ["Acme Phone X", "Beta Phone 2"]}'
# Sources: [1] review.example/acme, [2] store.example/beta-2, [3] shop.example/acme-x (written in the response).
MAP_BOTH = '{"recommendations": [{"number": 1, "sources": [1, 3]}, {"number": 2, "sources": [2]}]}'
S1_ALL_PASS = ('{"passes": true, "reasoning": "Both phones are priced under £58.", "evaluation_type": '
               '"per_product_all", "required_pass_count": -1, "recommendations_checked": ['
               '{"name": "Acme Phone X", "meets_criterion": true}, {"name": "Beta Phone 2", "meets_criterion": true}]}')
S1_FAIL = ('{"passes": false, "reasoning": "No price is given for Beta Phone 2.", "evaluation_type": '
           '"per_product_all", "required_pass_count": -1, "recommendations_checked": []}')
# Stage 1 credits the RAM claim to Acme (the text says 6 GB); the sources say Acme has 4 GB and Beta 6 GB.
S1_ANY_ACME = ('{"passes": true, "reasoning": "Acme Phone X is described with 6 GB.", "evaluation_type": '
               '"per_product_any", "required_pass_count": 1, "recommendations_checked": ['
               '{"name": "Acme Phone X", "meets_criterion": true}, {"name": "Beta Phone 2", "meets_criterion": false}]}')
VERIFIED = '{"verified": true, "reason": "Source [1] lists the price."}'
NOT_VERIFIED = '{"verified": false, "reason": "No source supports it."}'
TEXT_PASS = '{"passes": true, "reasoning": "Two phones are recommended.", "evaluation_type": "holistic"}'
TEXT_FAIL = '{"passes": false, "reasoning": "No phone is recommended.", "evaluation_type": "holistic"}'
LINKS_ACME = '{"urls": ["https://shop.example/acme-x."]}'
LINKS_BETA = '{"urls": ["https://store.example/beta-2?utm_source=openai"]}'
NO_LINKS = '{"urls": []}'
PRODUCT_PAGE = '{"valid": true, "page_type": "product_page", "reason": "Add to cart for this phone."}'
LIST_PAGE = '{"valid": false, "page_type": "list", "reason": "A category page with many phones."}'
PROSE = "I think the response meets the criterion, mostly."

BASE = {
    ("ace_recommendations", "task"): REC_BOTH,
    ("ace_source_map", "task"): MAP_BOTH,
    ("ace_stage1_grounded", C_PRICE): S1_ALL_PASS,
    ("ace_stage2", f"{C_PRICE} | Acme Phone X"): VERIFIED,
    ("ace_stage2", f"{C_PRICE} | Beta Phone 2"): VERIFIED,
    ("ace_stage1_grounded", C_RAM): S1_ANY_ACME,
    ("ace_stage2", f"{C_RAM} | Acme Phone X"): NOT_VERIFIED,
    ("ace_stage2", f"{C_RAM} | Beta Phone 2"): VERIFIED,
    ("ace_stage1", C_COUNT): TEXT_PASS,
    ("ace_product_links", "Acme Phone X"): LINKS_ACME,
    ("ace_product_links", "Beta Phone 2"): LINKS_BETA,
    ("ace_link_product", ACME_URL): PRODUCT_PAGE,
    ("ace_link_product", BETA_URL): PRODUCT_PAGE,
}
PAGES = {ACME_URL: ACME_PAGE, BETA_URL: BETA_PAGE}


def shopping(*criteria: Criterion, domain: str = "Shopping") -> Task:
    return Task(domain=domain, task_id=312, prompt=QUERY, workflow="Product recommendation", criteria=criteria)


async def grade(task: Task, overrides: dict | None = None, pages: dict | None = None, semantics: str = "official",
                response: str = RESPONSE, sources: tuple = SOURCES) -> tuple[AceResult, ScriptedJudge, FakePages]:
    judge = ScriptedJudge({**BASE, **(overrides or {})})
    source = FakePages({**PAGES, **(pages or {})})
    result = await score_task(task, response, sources, judge, source, semantics)
    return result, judge, source


def scores(result: AceResult) -> list[int | None]:
    return [c.score for c in result.criteria]


# --------------------------------------------------------------------------- routes


def test_routes() -> None:
    assert route_of(LINK) == "link"
    assert route_of(COUNT) == "stage1"
    assert route_of(PRICE) == "grounded"
    assert route_of(Criterion(9, "x", is_link=True, grounded=False)) == "link"


@pytest.mark.parametrize(("reply", "expected"), [(TEXT_PASS, 1), (TEXT_FAIL, 0)])
async def test_stage1_route(reply: str, expected: int) -> None:
    result, judge, pages = await grade(shopping(COUNT), {("ace_stage1", C_COUNT): reply})
    [c] = result.criteria
    assert (c.route, c.score, c.valid, c.stage_reached) == ("stage1", expected, True, "response_text_only")
    assert judge.calls == [("ace_stage1", C_COUNT)]
    assert pages.fetched == []
    assert c.stage2 is None and c.link is None
    assert c.judge_model == "openai/judge-test-1"
    assert c.prompt_version == "1.0.0"
    assert c.stage1["verdict"]["prompt_name"] == "ace_stage1"


@pytest.mark.parametrize(("stage1", "acme", "beta", "expected", "reached"), [
    (S1_FAIL, VERIFIED, VERIFIED, 0, "response_text"),
    (S1_ALL_PASS, VERIFIED, VERIFIED, 1, "grounded_sources"),
    (S1_ALL_PASS, VERIFIED, NOT_VERIFIED, -1, "grounded_sources"),
    (S1_ALL_PASS, NOT_VERIFIED, NOT_VERIFIED, -1, "grounded_sources"),
])
async def test_grounded_route(stage1: str, acme: str, beta: str, expected: int, reached: str) -> None:
    overrides = {("ace_stage1_grounded", C_PRICE): stage1, ("ace_stage2", f"{C_PRICE} | Acme Phone X"): acme,
                 ("ace_stage2", f"{C_PRICE} | Beta Phone 2"): beta}
    result, judge, pages = await grade(shopping(PRICE), overrides)
    [c] = result.criteria
    assert (c.route, c.score, c.stage_reached) == ("grounded", expected, reached)
    if expected == 0:
        assert [k for k in judge.calls if k[0] == "ace_stage2"] == []
        assert c.stage2 is None
    else:
        # Acme is backed by source [1] and by the link the response wrote (fetched: source [3]).
        assert c.stage2["product_results"][0]["source_numbers"] == [1, 3]
        assert c.stage2["product_results"][0]["sources_checked"] == [1, 3]
        assert pages.fetched == ["https://shop.example/acme-x"]


async def test_stage2_sources_are_the_mapped_ones() -> None:
    result, judge, _ = await grade(shopping(PRICE))
    stage2 = {v["recommendation"]: v["sources"] for v in judge.variables if "recommendation" in v}
    assert "Source [1]: Acme Phone X review" in stage2["Acme Phone X"]
    assert "Source [3]: Link from response: https://shop.example/acme-x" in stage2["Acme Phone X"]
    assert "Add to cart. Free delivery." in stage2["Acme Phone X"]
    assert "Source [2]: Beta Phone 2" in stage2["Beta Phone 2"]
    assert "review.example" not in stage2["Beta Phone 2"]
    assert result.recommendations["product_source_map"] == {"Acme Phone X": [1, 3], "Beta Phone 2": [2]}
    assert [s["origin"] for s in result.sources] == ["source", "source", "response_link"]


async def test_grounded_product_without_sources_is_not_verified_without_a_call() -> None:
    overrides = {("ace_source_map", "task"): '{"recommendations": [{"number": 1, "sources": [1]}]}'}
    result, judge, _ = await grade(shopping(PRICE), overrides)
    [c] = result.criteria
    assert c.score == -1
    beta = c.stage2["product_results"][1]
    assert (beta["pass"], beta["reason"], beta["verdict"]) == (
        False, "No source content mapped to this recommendation", None)
    assert ("ace_stage2", f"{C_PRICE} | Beta Phone 2") not in judge.calls


@pytest.mark.parametrize(("sources", "holistic", "expected"), [
    (SOURCES, VERIFIED, 1),
    (SOURCES, NOT_VERIFIED, -1),
    ((), None, -1),
])
async def test_grounded_without_recommendations_is_checked_holistically(sources, holistic, expected) -> None:
    overrides = {("ace_recommendations", "task"): '{"recommendations": []}',
                 ("ace_stage1_grounded", C_PRICE): '{"passes": true, "evaluation_type": "holistic"}'}
    if holistic is not None:
        overrides[("ace_stage2_holistic", C_PRICE)] = holistic
    result, judge, _ = await grade(shopping(PRICE), overrides, sources=sources)
    [c] = result.criteria
    assert c.score == expected
    assert c.stage2["mode"] == "holistic"
    assert ("ace_source_map", "task") not in judge.calls
    assert [v["recommendations"] for v in judge.variables if v.get("criterion") == C_PRICE
            and "recommendations" in v] == ["(No recommendations identified)"]
    if holistic is None:
        assert c.stage2["reasoning"] == "No grounding sources available for verification"
        assert ("ace_stage2_holistic", C_PRICE) not in judge.calls


# --------------------------------------------------------------------------- both semantics, side by side


async def test_semantics_side_by_side_stage2_scope() -> None:
    task = shopping(RAM)
    official, official_judge, _ = await grade(task, semantics="official")
    metis, metis_judge, _ = await grade(task, semantics="metis")
    # Official: Stage 2 over every mapped recommendation; Beta is verified, so ">= 1" holds.
    assert scores(official) == [1]
    assert official.criteria[0].stage2["evaluated"] == ["Acme Phone X", "Beta Phone 2"]
    assert ("ace_stage2", f"{C_RAM} | Beta Phone 2") in official_judge.calls
    # Metis: only Acme passed Stage 1, and the sources do not back Acme's claim.
    assert scores(metis) == [-1]
    assert metis.criteria[0].stage2["evaluated"] == ["Acme Phone X"]
    assert ("ace_stage2", f"{C_RAM} | Beta Phone 2") not in metis_judge.calls


@pytest.mark.parametrize(("overrides", "official", "metis"), [
    ({("ace_product_links", "Beta Phone 2"): NO_LINKS}, 0, -1),
    ({("ace_recommendations", "task"): '{"recommendations": []}'}, 0, -1),
    ({}, 1, 1),
])
async def test_semantics_side_by_side_missing_link(overrides, official, metis) -> None:
    task = shopping(LINK)
    first, _, _ = await grade(task, overrides, semantics="official")
    second, _, _ = await grade(task, overrides, semantics="metis")
    assert (scores(first), scores(second)) == ([official], [metis])


async def test_semantics_side_by_side_no_hurdle() -> None:
    task = shopping(replace(PRICE, hurdle=False), COUNT)
    official, _, _ = await grade(task, semantics="official")
    metis, _, _ = await grade(task, semantics="metis")
    assert scores(official) == scores(metis) == [1, 1]
    assert (official.total_score, official.total_hurdle_score, official.score, official.raw_score) == (2, 0, 0.0, 1.0)
    assert (official.hurdle_outcome, official.hurdle_pass) == ("none", False)
    assert (metis.total_score, metis.total_hurdle_score, metis.score, metis.raw_score) == (2, 2, 1.0, 1.0)
    assert (metis.hurdle_outcome, metis.hurdle_pass) == ("none", True)
    assert official.to_score_result().metrics["hurdle_pass"] == 0.0
    assert metis.to_score_result().metrics["hurdle_pass"] == 1.0


async def test_readme_worked_example() -> None:
    """The worked example of evals/ace/README.md, both semantics side by side."""
    task = shopping(PRICE, RAM, COUNT, LINK)
    overrides = {("ace_product_links", "Beta Phone 2"): NO_LINKS}
    official, _, _ = await grade(task, overrides, semantics="official")
    metis, _, _ = await grade(task, overrides, semantics="metis")
    assert (scores(official), official.total_score, official.score) == ([1, 1, 1, 0], 3, 0.75)
    assert (scores(metis), metis.total_score, metis.score) == ([1, -1, 1, -1], 0, 0.0)
    # B: the price hurdle fails in Stage 2: both semantics give the task 0.
    failed = {**overrides, ("ace_stage2", f"{C_PRICE} | Beta Phone 2"): NOT_VERIFIED}
    official, _, _ = await grade(task, failed, semantics="official")
    metis, _, _ = await grade(task, failed, semantics="metis")
    assert (scores(official), official.score, official.raw_score) == ([-1, 1, 1, 0], 0.0, 0.25)
    assert (scores(metis), metis.score, metis.raw_score) == ([-1, -1, 1, -1], 0.0, -0.5)
    # C: no hurdle criterion, and Beta's link given.
    task = shopping(replace(PRICE, hurdle=False), RAM, COUNT, LINK)
    official, _, _ = await grade(task, semantics="official")
    metis, _, _ = await grade(task, semantics="metis")
    assert (scores(official), official.total_hurdle_score, official.score, official.raw_score) == (
        [1, 1, 1, 1], 0, 0.0, 1.0)
    assert (scores(metis), metis.total_hurdle_score, metis.score, metis.raw_score) == ([1, -1, 1, 1], 2, 0.5, 0.5)


async def test_unknown_semantics() -> None:
    with pytest.raises(ValueError, match="semantics must be one of"):
        await score_task(shopping(COUNT), RESPONSE, SOURCES, ScriptedJudge(BASE), FakePages(PAGES), "lenient")


# --------------------------------------------------------------------------- link criteria


async def test_all_links_verified() -> None:
    result, judge, pages = await grade(shopping(LINK))
    [c] = result.criteria
    assert (c.route, c.score, c.stage_reached) == ("link", 1, "link_verification")
    assert c.reasoning == "Links provided and all verified (product mode)"
    # The judge's trailing "." is cleaned off; the utm link is fetched exactly as written.
    assert sorted(pages.fetched) == ["https://shop.example/acme-x", "https://store.example/beta-2?utm_source=openai"]
    assert [r["links_found"] for r in c.stage1["product_results"]] == [
        ["https://shop.example/acme-x"], ["https://store.example/beta-2?utm_source=openai"]]
    assert [r["pass"] for r in c.link["product_results"]] == [True, True]
    assert ("ace_link_product", ACME_URL) in judge.calls


async def test_link_not_a_product_page() -> None:
    result, _, _ = await grade(shopping(LINK), {("ace_link_product", BETA_URL): LIST_PAGE})
    [c] = result.criteria
    assert c.score == -1
    assert c.reasoning == "Links provided but verification failed (product mode)"
    beta = c.link["product_results"][1]["links_checked"][0]
    assert (beta["is_valid"], beta["page_type"]) == (False, "list")


async def test_link_short_page_is_invalid_without_a_judge_call() -> None:
    result, judge, _ = await grade(shopping(LINK), pages={BETA_URL: Page(BETA_URL, "Beta", "Not found")})
    [c] = result.criteria
    assert c.score == -1
    check = c.link["product_results"][1]["links_checked"][0]
    assert (check["is_valid"], check["page_type"], check["reason"]) == (
        False, "error", "Page failed to load or has no content (9 chars)")
    assert ("ace_link_product", BETA_URL) not in judge.calls


async def test_second_link_can_pass_a_product() -> None:
    other = "https://other.example/beta"
    overrides = {("ace_product_links", "Beta Phone 2"): '{"urls": ["https://other.example/beta", '
                                                        '"https://store.example/beta-2?utm_source=openai"]}',
                 ("ace_link_product", other): LIST_PAGE}
    result, _, _ = await grade(shopping(LINK), overrides,
                               pages={other: Page(other, "Phones", "Phones under £60: Beta Phone 2, Gamma 3, Delta 4. "
                                                                    "Compare prices across twelve retailers today.")})
    [c] = result.criteria
    assert c.score == 1
    assert [x["is_valid"] for x in c.link["product_results"][1]["links_checked"]] == [False, True]


@pytest.mark.parametrize(("mode", "prompt"), [("Product", "ace_link_product"), ("Shop", "ace_link_shop")])
async def test_shop_vs_product_mode(mode: str, prompt: str) -> None:
    criterion = replace(LINK, shop_vs_product=mode)
    overrides = {(prompt, ACME_URL): PRODUCT_PAGE, (prompt, BETA_URL): PRODUCT_PAGE}
    result, judge, _ = await grade(shopping(criterion), overrides)
    assert scores(result) == [1]
    assert {name for name, _ in judge.calls if name.startswith("ace_link_")} == {prompt}
    assert result.criteria[0].link["mode"] == mode.lower()


async def test_shop_mode_rejects_a_product_page_the_judge_calls_another_vendor() -> None:
    criterion = replace(LINK, shop_vs_product="Shop")
    overrides = {("ace_link_shop", ACME_URL): PRODUCT_PAGE,
                 ("ace_link_shop", BETA_URL): '{"valid": false, "page_type": "search_results", '
                                              '"reason": "Marketplace search, another seller."}'}
    result, _, _ = await grade(shopping(criterion), overrides)
    assert scores(result) == [-1]


def test_link_mode() -> None:
    assert link_mode("Shopping", "Shop") == "shop"
    assert link_mode("Shopping", "Product") == "product"
    assert link_mode("Shopping", None) == "product"
    assert link_mode("Gaming", None) == "gaming"
    assert link_mode("Food", "Shop") == "product"  # upstream reads Shop vs. Product for Shopping only


async def test_gaming_link_is_checked_against_the_criterion() -> None:
    steam = "https://store.steampowered.com/app/413150"
    criterion = Criterion(7, "Provides Steam store links for each game", is_link=True,
                          criteria_type="Provides link(s)")
    task = Task("Gaming", 276, "Suggest a farming game on Steam.", "Game recommendation", (criterion,))
    judge = ScriptedJudge({
        ("ace_recommendations", "task"): '{"recommendations": ["Stardew Valley"]}',
        ("ace_product_links", "Stardew Valley"): '{"urls": ["https://store.steampowered.com/app/413150"]}',
        ("ace_link_gaming", steam): '{"valid": true, "page_type": "store", "reason": "store.steampowered.com page."}',
    })
    pages = FakePages({steam: Page(steam, "Stardew Valley on Steam", "Stardew Valley - Buy")})
    result = await score_task(task, "Try Stardew Valley: https://store.steampowered.com/app/413150", (), judge, pages)
    assert scores(result) == [1]
    [variables] = [v for v in judge.variables if "page" in v]
    assert variables["criterion"] == "Provides Steam store links for each game"
    assert result.criteria[0].link["mode"] == "gaming"


async def test_pages_are_fetched_once_per_task() -> None:
    second = replace(LINK, id=5, description="Provides a link to buy every phone")
    result, _, pages = await grade(shopping(PRICE, LINK, second))
    assert scores(result) == [1, 1, 1]
    assert sorted(pages.fetched) == ["https://shop.example/acme-x", "https://store.example/beta-2?utm_source=openai"]


# --------------------------------------------------------------------------- faults are never scores


@pytest.mark.parametrize(("error", "retryable"), [
    (ToolError("timed out after 30s", retryable=True), True),
    (ToolError("HTTP 429 after 3 tries", retryable=True), True),
    (ToolError("URL refused: private address", retryable=False), False),
])
async def test_link_fetch_fault_is_invalid_never_minus_one(error: Exception, retryable: bool) -> None:
    result, _, _ = await grade(shopping(LINK, COUNT), pages={BETA_URL: error})
    link, count = result.criteria
    assert (link.score, link.valid, link.retryable) == (None, False, retryable)
    assert link.error.startswith("link verification left open by a fault: fetching "
                                 "https://store.example/beta-2?utm_source=openai failed: ToolError: ")
    assert (count.score, count.valid) == (1, True)
    assert (result.valid, result.retryable, result.score, result.total_score) == (False, retryable, None, None)
    score = result.to_score_result()
    assert (score.valid, score.retryable, score.score, dict(score.metrics)) == (False, retryable, 0.0, {})
    assert score.reason.startswith("ACE task 312: 1 criterion(s) not graded: criterion 4: ")


async def test_fault_on_one_link_is_forgiven_when_a_later_link_passes() -> None:
    dead = "https://dead.example/beta"
    overrides = {("ace_product_links", "Beta Phone 2"): '{"urls": ["https://dead.example/beta", '
                                                        '"https://store.example/beta-2?utm_source=openai"]}'}
    result, _, _ = await grade(shopping(LINK), overrides, pages={dead: ToolError("connection reset", retryable=True)})
    assert scores(result) == [1]
    assert result.valid


async def test_stage2_source_fetch_fault_is_invalid_retryable() -> None:
    result, _, _ = await grade(shopping(PRICE), pages={ACME_URL: ToolError("HTTP 503", retryable=True)})
    [c] = result.criteria
    assert (c.score, c.valid, c.retryable) == (None, False, True)
    assert c.error == "fetching https://shop.example/acme-x failed: ToolError: HTTP 503"
    assert c.stage1["all_pass"] is True  # the part that was graded is kept
    assert (result.valid, result.retryable) == (False, True)


async def test_stage2_fault_does_not_matter_when_stage1_fails() -> None:
    result, _, pages = await grade(shopping(PRICE), {("ace_stage1_grounded", C_PRICE): S1_FAIL},
                                   pages={ACME_URL: ToolError("HTTP 503", retryable=True)})
    assert scores(result) == [0]
    assert pages.fetched == []


async def test_prose_judge_is_invalid_retryable() -> None:
    result, _, _ = await grade(shopping(COUNT, PRICE), {("ace_stage1", C_COUNT): PROSE})
    count, price = result.criteria
    assert (count.score, count.valid, count.retryable) == (None, False, True)
    assert count.error.startswith("judge gave no valid verdict for ace_stage1 v1.0.0: no valid verdict after 3 "
                                  "replies: not JSON")
    assert (price.score, price.valid) == (1, True)
    assert (result.valid, result.retryable) == (False, True)
    score = result.to_score_result()
    assert (score.valid, score.retryable) == (False, True)
    assert score.details["criteria"][0]["valid"] is False


async def test_off_schema_judge_is_invalid() -> None:
    result, _, _ = await grade(shopping(COUNT), {("ace_stage1", C_COUNT): '{"pass": "yes"}'})
    [c] = result.criteria
    assert (c.valid, c.retryable) == (False, True)
    assert "does not match the schema" in c.error


async def test_refused_judge_is_invalid_not_retryable() -> None:
    result, _, _ = await grade(shopping(COUNT), {("ace_stage1", C_COUNT): refused("ace_stage1")})
    assert (result.valid, result.retryable) == (False, False)
    assert result.criteria[0].error == ("judge gave no valid verdict for ace_stage1 v1.0.0: "
                                        "judge request failed: HTTP 400 Bad Request")


async def test_invalid_recommendations_make_dependent_criteria_invalid() -> None:
    result, _, _ = await grade(shopping(PRICE, LINK, COUNT), {("ace_recommendations", "task"): PROSE})
    assert [c.valid for c in result.criteria] == [False, False, True]
    assert result.recommendations is None
    assert (result.valid, result.retryable) == (False, True)


async def test_one_permanent_fault_makes_the_task_not_retryable() -> None:
    result, _, _ = await grade(shopping(COUNT, LINK), {("ace_stage1", C_COUNT): refused("ace_stage1")},
                               pages={BETA_URL: ToolError("timed out", retryable=True)})
    assert [c.retryable for c in result.criteria] == [False, True]
    assert (result.valid, result.retryable) == (False, False)


async def test_task_without_criteria_is_invalid() -> None:
    result, _, _ = await grade(shopping())
    assert (result.valid, result.retryable, result.error) == (False, False, "the task has no criteria")
    assert result.to_score_result().reason == "ACE task 312 not graded: the task has no criteria"


# --------------------------------------------------------------------------- hurdle and task score


@pytest.mark.parametrize(("semantics",), [("official",), ("metis",)])
@pytest.mark.parametrize(("price_stage1", "price_stage2", "expected_scores", "outcome", "task_score"), [
    (S1_ALL_PASS, VERIFIED, [1, 1, 1], "passed", 1.0),
    (S1_FAIL, VERIFIED, [0, 1, 1], "failed", 0.0),
    (S1_ALL_PASS, NOT_VERIFIED, [-1, 1, 1], "failed", 0.0),
])
async def test_hurdle_rule(semantics, price_stage1, price_stage2, expected_scores, outcome, task_score) -> None:
    overrides = {("ace_stage1_grounded", C_PRICE): price_stage1, ("ace_stage2", f"{C_PRICE} | Acme Phone X"): price_stage2}
    result, _, _ = await grade(shopping(PRICE, COUNT, LINK), overrides, semantics=semantics)
    assert scores(result) == expected_scores
    assert (result.hurdle_outcome, result.score) == (outcome, task_score)
    assert result.raw_score == sum(expected_scores) / 3


async def test_task_score_is_total_over_criteria() -> None:
    # Price +1 (hurdle), RAM +1 (official), count 0, link -1: total 1 over 4 criteria.
    overrides = {("ace_stage1", C_COUNT): TEXT_FAIL, ("ace_link_product", BETA_URL): LIST_PAGE}
    result, _, _ = await grade(shopping(PRICE, RAM, COUNT, LINK), overrides)
    assert scores(result) == [1, 1, 0, -1]
    assert (result.total_score, result.total_hurdle_score, result.score) == (1, 1, 0.25)
    assert result.summary() == {"pass_count": 2, "fail_response_count": 1, "fail_source_count": 1,
                                "invalid_count": 0, "total": 4, "hurdle_count": 1, "hurdle_pass_count": 1}
    assert result.route_means() == {"link": -1.0, "stage1": 0.0, "grounded": 1.0}


@pytest.mark.parametrize(("count", "link_page", "price_s1", "price_s2", "expected"), [
    (TEXT_PASS, PRODUCT_PAGE, S1_ALL_PASS, VERIFIED, 1.0),
    (TEXT_FAIL, LIST_PAGE, S1_ALL_PASS, VERIFIED, -0.0),
    (TEXT_FAIL, LIST_PAGE, S1_ALL_PASS, NOT_VERIFIED, 0.0),
    (TEXT_PASS, LIST_PAGE, S1_ALL_PASS, VERIFIED, 1 / 3),
    (TEXT_FAIL, PRODUCT_PAGE, S1_FAIL, VERIFIED, 0.0),
])
async def test_score_bounds(count, link_page, price_s1, price_s2, expected) -> None:
    overrides = {("ace_stage1", C_COUNT): count, ("ace_link_product", BETA_URL): link_page,
                 ("ace_stage1_grounded", C_PRICE): price_s1, ("ace_stage2", f"{C_PRICE} | Beta Phone 2"): price_s2}
    for semantics in ("official", "metis"):
        result, _, _ = await grade(shopping(PRICE, COUNT, LINK), overrides, semantics=semantics)
        assert result.score == pytest.approx(expected)
        assert -1.0 <= result.score <= 1.0 and -1.0 <= result.raw_score <= 1.0
        assert all(c.score in (-1, 0, 1) for c in result.criteria)


async def test_all_minus_one_without_hurdle_gate_in_metis() -> None:
    overrides = {("ace_stage2", f"{C_PRICE} | Acme Phone X"): NOT_VERIFIED, ("ace_link_product", ACME_URL): LIST_PAGE}
    task = shopping(replace(PRICE, hurdle=False), LINK)
    result, _, _ = await grade(task, overrides, semantics="metis")
    assert (scores(result), result.score, result.raw_score) == ([-1, -1], -1.0, -1.0)
    official, _, _ = await grade(task, overrides, semantics="official")
    assert (official.score, official.raw_score) == (0.0, -1.0)


# --------------------------------------------------------------------------- outputs


async def test_to_score_result_and_artifacts() -> None:
    result, _, _ = await grade(shopping(PRICE, COUNT, LINK))
    score = result.to_score_result()
    assert isinstance(score, ScoreResult)
    assert (score.valid, score.score, score.retryable) == (True, 1.0, False)
    assert dict(score.metrics) == {"ace_score": 1.0, "hurdle_pass": 1.0, "raw_score": 1.0, "link_mean": 1.0,
                                   "stage1_mean": 1.0, "grounded_mean": 1.0}
    assert score.reason == "ACE (official) task 312: 1.0000 = 3/3 (total 3, hurdle passed)"
    details = score.details
    assert details["hurdle"] == {"outcome": "passed", "hurdle_pass": True, "semantics": "official",
                                 "hurdle_count": 1, "hurdle_scores": [1], "total_hurdle_score": 3}
    assert details["prompt_version"] == "1.0.0"
    assert details["judge_models"] == ["openai/judge-test-1"]
    assert [(c["criterion_id"], c["route"], c["judge_model"], c["prompt_version"]) for c in details["criteria"]] == [
        (1, "grounded", "openai/judge-test-1", "1.0.0"), (3, "stage1", "openai/judge-test-1", "1.0.0"),
        (4, "link", "openai/judge-test-1", "1.0.0")]
    json.dumps(details)

    artifacts = result.artifacts()
    json.dumps(artifacts)
    assert artifacts["criteria_scores"] == [[1, "Meets pricing requirements/gives price", "Hurdle"],
                                            [1, "Meets quantity requirement", "Not"],
                                            [1, "Provides link(s)", "Not"]]
    assert (artifacts["total_score"], artifacts["total_hurdle_score"], artifacts["score"]) == (3, 3, 1.0)
    first = artifacts["detailed_results"][0]
    assert {"score", "route", "stage_1_result", "stage_2_result", "reasoning", "judge_model",
            "prompt_version"} <= set(first)
    assert first["stage_1_result"]["verdict"]["prompt_name"] == "ace_stage1_grounded"
    assert first["stage_2_result"]["product_results"][0]["verdict"]["prompt_version"] == "1.0.0"
    assert first["reasoning"].startswith("Stage 1: Both phones are priced under £58. | Stage 2: Source verification "
                                         "(2/2 verified, per_product_all, needed all): met")
    assert artifacts["recommendations"]["names"] == ["Acme Phone X", "Beta Phone 2"]


async def test_criteria_are_graded_concurrently() -> None:
    criteria = tuple(Criterion(i, f"Criterion number {i}") for i in range(1, 4))
    in_flight = 0
    all_in = asyncio.Event()

    class BarrierJudge(ScriptedJudge):
        async def judge(self, prompt, variables, schema):
            nonlocal in_flight
            in_flight += 1
            if in_flight == 3:
                all_in.set()
            await asyncio.wait_for(all_in.wait(), timeout=2)
            return await super().judge(prompt, variables, schema)

    judge = BarrierJudge({("ace_stage1", f"Criterion number {i}"): TEXT_PASS for i in range(1, 4)})
    result = await score_task(shopping(*criteria), RESPONSE, SOURCES, judge, FakePages({}))
    assert scores(result) == [1, 1, 1]


# --------------------------------------------------------------------------- helpers and prompts


def test_extract_and_normalize_urls() -> None:
    assert extract_urls(RESPONSE) == ["https://shop.example/acme-x", "https://store.example/beta-2?utm_source=openai"]
    assert normalize_url("https://store.example/beta-2?utm_source=openai") == "https://store.example/beta-2"
    assert normalize_url("https://site.example/p?id=5&utm_medium=x&color=red") == "https://site.example/p?id=5&color=red"


PROMPT_VARIABLES = {
    "ace_recommendations": {"query": "q", "response": "r"},
    "ace_source_map": {"response": "r", "recommendations": "1. A", "sources": "[1] https://a.example"},
    "ace_product_links": {"product": "A", "response": "r"},
    "ace_link_product": {"name": "A", "url": "https://a.example", "page": "p"},
    "ace_link_shop": {"name": "A", "url": "https://a.example", "page": "p"},
    "ace_link_gaming": {"name": "A", "url": "https://a.example", "page": "p", "criterion": "c"},
    "ace_stage1": {"criterion": "c", "response": "r"},
    "ace_stage1_grounded": {"criterion": "c", "response": "r", "recommendations": "- A"},
    "ace_stage2": {"criterion": "c", "recommendation": "A", "sources": "s"},
    "ace_stage2_holistic": {"criterion": "c", "sources": "s"},
}


def test_prompts_are_versioned_and_render() -> None:
    assert prompts.PROMPT_VERSION == "1.0.0"
    assert [p.name for p in prompts.PROMPTS] == list(PROMPT_VARIABLES)
    assert prompts.prompt_versions() == {"set": "1.0.0", **{name: "1.0.0" for name in PROMPT_VARIABLES}}
    for prompt in prompts.PROMPTS:
        system, user = prompt.render(PROMPT_VARIABLES[prompt.name])
        assert "$" not in system
        with pytest.raises(KeyError):
            prompt.render({})
    _, user = prompts.STAGE2.render(PROMPT_VARIABLES["ace_stage2"])
    assert "badminton rackets under $25" in user


def test_schemas() -> None:
    check = prompts.GroundedStage1Check.model_validate_json('{"passes": true, "evaluation_type": "per_product_any"}')
    assert (check.required_pass_count, check.recommendations_checked) == (-1, [])
    with pytest.raises(ValueError):
        prompts.Stage1Check.model_validate_json('{"passes": true, "evaluation_type": "sometimes"}')
    assert prompts.LinkCheck.model_validate_json('{"valid": false}').page_type == "unknown"
    for schema in (prompts.Recommendations, prompts.SourceMap, prompts.ProductLinks, prompts.LinkCheck,
                   prompts.Stage1Check, prompts.GroundedStage1Check, prompts.SourceCheck):
        json.dumps(schema.model_json_schema())
