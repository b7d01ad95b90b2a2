"""ACE grading: score one response to one ACE task, criterion by criterion, in {-1, 0, +1}.

Benchmark: ACE, Mercor's AI Consumer Index (arXiv:2512.04921). The rules follow the upstream grader,
Mercor-Intelligence/apex-evals ``ace/harness/autograder.py`` (and the recommendation mapping of
``ace/harness/grounding-pipeline.py``); ``evals/ace/README.md`` lists, rule by rule, the upstream
function each one comes from and how the two semantics differ.

Each criterion takes one of three routes:

* ``link`` (``criterion.is_link``, upstream type "Provides link(s)"): the links the response gives
  for each recommendation are scraped with ``pages.fetch`` and classified by the judge: in Product
  mode the page must be the product's own purchase page, in Shop mode the vendor's store page, and
  in the Gaming domain it must be the kind of link the criterion names. A recommendation passes when
  one of its links does; all pass -> +1, else -1. No recommendation, or a recommendation without a
  link: 0 (``official``) or -1 (``metis``).
* ``stage1`` (not grounded): Stage 1 only, on the response text: pass +1, fail 0.
* ``grounded``: Stage 1 on the response text (fail 0); if it passes, Stage 2 checks the claim against
  the sources (the pages the model read, and the links it wrote): verified +1, not verified -1. Stage 2
  covers every mapped recommendation (``official``) or those that passed Stage 1 (``metis``).

Task score: the total over criteria, set to 0 when a hurdle criterion scored <= 0 (and, in
``official``, when the task has no hurdle criterion at all: upstream's ``total_hurdle_score``), divided
by the number of criteria, so it lies in [-1, 1].

Faults are never scores: a judge that never answers validly, or a page that cannot be fetched while
grading, makes that criterion invalid (``score=None``, retryable as the verdict or the error says), and
one invalid criterion makes the whole task result invalid, which the harness records as errored.

The module is pure given the judge and the page source handed in; it imports no tools and builds no
judge. Criteria are graded concurrently (``asyncio.gather``); the judge bounds its own concurrency.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import parse_qs, urlencode, urlparse, urlunparse

from pydantic import BaseModel

from evals.ace.prompts import (
    GROUNDED_STAGE1,
    LINK_GAMING,
    LINK_PRODUCT,
    LINK_SHOP,
    PRODUCT_LINKS,
    PROMPT_VERSION,
    RECOMMENDATIONS,
    SOURCE_MAP,
    STAGE1,
    STAGE2,
    STAGE2_HOLISTIC,
    GroundedStage1Check,
    LinkCheck,
    ProductLinks,
    Recommendations,
    SourceCheck,
    SourceMap,
    Stage1Check,
    prompt_versions,
)
from metis_pytest.judge import JudgePrompt, Verdict
from metis_pytest.registry import ScoreResult

__all__ = [
    "MIN_GAMING_PAGE_CHARS",
    "MIN_PAGE_CHARS",
    "ROUTES",
    "SEMANTICS",
    "AceResult",
    "CriterionLike",
    "CriterionResult",
    "Judge",
    "PageLike",
    "PageSource",
    "TaskLike",
    "extract_urls",
    "link_mode",
    "normalize_url",
    "route_of",
    "score_task",
]

SEMANTICS: tuple[str, ...] = ("official", "metis")
ROUTES: tuple[str, ...] = ("link", "stage1", "grounded")
Route = Literal["link", "stage1", "grounded"]
Semantics = Literal["official", "metis"]
# A scraped page shorter than this is "failed to load or has no content": an invalid link, no judge
# call (upstream helpers/purchase_page_verifier.py: 100 for purchase pages, 10 for Gaming links).
MIN_PAGE_CHARS = 100
MIN_GAMING_PAGE_CHARS = 10
NO_RECOMMENDATIONS = "(No recommendations identified)"

T = TypeVar("T", bound=BaseModel)
R = TypeVar("R")


# --------------------------------------------------------------------------- what we are handed


class PageLike(Protocol):
    """A fetched page (``metis_pytest.tools.web.Page`` or anything with these attributes)."""

    @property
    def url(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def content(self) -> str: ...


class PageSource(Protocol):
    """Fetches pages while grading. A failure raises; the exception's ``retryable`` says if it may pass."""

    async def fetch(self, url: str) -> PageLike: ...


class Judge(Protocol):
    """:class:`metis_pytest.judge.JudgeClient` or a stand-in with the same coroutine."""

    async def judge(self, prompt: JudgePrompt, variables: dict[str, str], schema: type[T]) -> Verdict[T]: ...


class CriterionLike(Protocol):
    @property
    def id(self) -> Any: ...
    @property
    def description(self) -> str: ...
    @property
    def hurdle(self) -> bool: ...
    @property
    def grounded(self) -> bool: ...
    @property
    def criteria_type(self) -> str: ...
    @property
    def is_link(self) -> bool: ...
    @property
    def shop_vs_product(self) -> str | None: ...


class TaskLike(Protocol):
    @property
    def domain(self) -> str: ...
    @property
    def task_id(self) -> Any: ...
    @property
    def prompt(self) -> str: ...
    @property
    def criteria(self) -> Sequence[CriterionLike]: ...


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class CriterionResult:
    """One criterion's grade. ``score`` is -1, 0 or +1, or ``None`` when the criterion is invalid.

    ``stage1``/``stage2``/``link`` hold what each stage saw and decided, each judge call as its
    :meth:`Verdict.record` (judge model, prompt name and version, parsed data, raw reply)."""

    domain: str
    task_id: Any
    criterion_id: Any
    description: str
    criteria_type: str
    hurdle: bool
    route: Route
    score: int | None
    stage_reached: str
    stage1: dict[str, Any] | None
    stage2: dict[str, Any] | None
    link: dict[str, Any] | None
    reasoning: str
    judge_model: str
    prompt_version: str
    valid: bool
    retryable: bool
    error: str | None = None

    def record(self) -> dict[str, Any]:
        """A JSON-safe dict of everything above."""
        return {
            "domain": self.domain, "task_id": self.task_id, "criterion_id": self.criterion_id,
            "description": self.description, "type": self.criteria_type, "hurdle": self.hurdle,
            "route": self.route, "score": self.score, "stage_reached": self.stage_reached,
            "stage_1_result": self.stage1, "stage_2_result": self.stage2, "link_result": self.link,
            "reasoning": self.reasoning, "judge_model": self.judge_model,
            "prompt_version": self.prompt_version, "valid": self.valid, "retryable": self.retryable,
            "error": self.error,
        }


@dataclass(frozen=True)
class AceResult:
    """A task's grade: every criterion, and the task score derived from them under ``semantics``."""

    domain: str
    task_id: Any
    semantics: Semantics
    criteria: tuple[CriterionResult, ...]
    recommendations: dict[str, Any] | None = None
    sources: tuple[dict[str, Any], ...] = ()
    prompt_version: str = PROMPT_VERSION
    error: str | None = None

    # ----------------------------------------------------------- validity

    @property
    def invalid_criteria(self) -> tuple[CriterionResult, ...]:
        return tuple(c for c in self.criteria if not c.valid)

    @property
    def valid(self) -> bool:
        return self.error is None and bool(self.criteria) and not self.invalid_criteria

    @property
    def retryable(self) -> bool:
        """Whether grading again may succeed: every invalid criterion says it is retryable."""
        if self.valid or self.error is not None:
            return False
        return all(c.retryable for c in self.invalid_criteria)

    # ----------------------------------------------------------- scores (None while invalid)

    @property
    def num_criteria(self) -> int:
        return len(self.criteria)

    @property
    def total_score(self) -> int | None:
        """Sum of the criterion scores (upstream ``total_score``)."""
        return sum(c.score for c in self.criteria) if self.valid else None  # type: ignore[misc]

    @property
    def hurdle_scores(self) -> tuple[int | None, ...]:
        return tuple(c.score for c in self.criteria if c.hurdle)

    @property
    def hurdle_outcome(self) -> Literal["passed", "failed", "none"] | None:
        """``none`` (no hurdle criterion), ``failed`` (one scored <= 0) or ``passed``; None if invalid."""
        if not self.valid:
            return None
        scores = self.hurdle_scores
        if not scores:
            return "none"
        return "failed" if any(s <= 0 for s in scores) else "passed"  # type: ignore[operator]

    @property
    def hurdle_pass(self) -> bool | None:
        """Whether the hurdle gate lets the total through (``official``: a task with no hurdle does not)."""
        outcome = self.hurdle_outcome
        if outcome is None:
            return None
        if outcome == "none":
            return self.semantics == "metis"
        return outcome == "passed"

    @property
    def total_hurdle_score(self) -> int | None:
        """The total after the hurdle gate (upstream ``total_hurdle_score``): the total, or 0."""
        if not self.valid:
            return None
        return self.total_score if self.hurdle_pass else 0

    @property
    def raw_score(self) -> float | None:
        """Mean criterion score without the hurdle gate, in [-1, 1]."""
        return self.total_score / self.num_criteria if self.valid else None  # type: ignore[operator]

    @property
    def score(self) -> float | None:
        """The ACE task score: ``total_hurdle_score / num_criteria``, in [-1, 1]; None if invalid."""
        return self.total_hurdle_score / self.num_criteria if self.valid else None  # type: ignore[operator]

    def route_means(self) -> dict[str, float]:
        """Mean score per route, for the routes this task has (valid criteria only)."""
        means = {}
        for route in ROUTES:
            scores = [c.score for c in self.criteria if c.route == route and c.score is not None]
            if scores:
                means[route] = sum(scores) / len(scores)
        return means

    def summary(self) -> dict[str, int]:
        """Counts as upstream's ``summary``: +1, 0 and -1 criteria, hurdles and hurdles passed."""
        scores = [c.score for c in self.criteria]
        hurdles = self.hurdle_scores
        return {
            "pass_count": sum(1 for s in scores if s == 1),
            "fail_response_count": sum(1 for s in scores if s == 0),
            "fail_source_count": sum(1 for s in scores if s == -1),
            "invalid_count": sum(1 for s in scores if s is None),
            "total": len(scores),
            "hurdle_count": len(hurdles),
            "hurdle_pass_count": sum(1 for s in hurdles if s == 1),
        }

    @property
    def judge_models(self) -> tuple[str, ...]:
        return tuple(sorted({c.judge_model for c in self.criteria if c.judge_model}))

    # ----------------------------------------------------------- outputs

    def hurdle_record(self) -> dict[str, Any]:
        return {
            "outcome": self.hurdle_outcome,
            "hurdle_pass": self.hurdle_pass,
            "semantics": self.semantics,
            "hurdle_count": len(self.hurdle_scores),
            "hurdle_scores": list(self.hurdle_scores),
            "total_hurdle_score": self.total_hurdle_score,
        }

    def reason(self) -> str:
        if self.error is not None:
            return f"ACE task {self.task_id} not graded: {self.error}"
        if not self.valid:
            bad = "; ".join(f"criterion {c.criterion_id}: {c.error}" for c in self.invalid_criteria)
            return f"ACE task {self.task_id}: {len(self.invalid_criteria)} criterion(s) not graded: {bad}"
        return (f"ACE ({self.semantics}) task {self.task_id}: {self.score:.4f} = {self.total_hurdle_score}/"
                f"{self.num_criteria} (total {self.total_score}, hurdle {self.hurdle_outcome})")

    def to_score_result(self) -> ScoreResult:
        """The harness's :class:`ScoreResult`; an invalid task gives ``valid=False`` and no metrics."""
        details: dict[str, Any] = {
            "benchmark": "ace",
            "domain": self.domain,
            "task_id": self.task_id,
            "semantics": self.semantics,
            "prompt_version": self.prompt_version,
            "prompt_versions": prompt_versions(),
            "judge_models": list(self.judge_models),
            "num_criteria": self.num_criteria,
            "total_score": self.total_score,
            "raw_score": self.raw_score,
            "hurdle": self.hurdle_record(),
            "summary": self.summary(),
            "criteria": [c.record() for c in self.criteria],
            "recommendations": self.recommendations,
        }
        if not self.valid:
            return ScoreResult(score=0.0, metrics={}, reason=self.reason(), valid=False,
                               retryable=self.retryable, details=details)
        metrics = {"ace_score": float(self.score),  # type: ignore[arg-type]
                   "hurdle_pass": 1.0 if self.hurdle_pass else 0.0,
                   "raw_score": float(self.raw_score)}  # type: ignore[arg-type]
        metrics.update({f"{route}_mean": value for route, value in self.route_means().items()})
        return ScoreResult(score=float(self.score), metrics=metrics, reason=self.reason(),  # type: ignore[arg-type]
                           valid=True, retryable=False, details=details)

    def artifacts(self) -> dict[str, Any]:
        """The JSON-safe content of ``3_autograder_results.json`` (upstream's layout, plus our fields)."""
        return {
            "task_id": self.task_id,
            "domain": self.domain,
            "semantics": self.semantics,
            "prompt_version": self.prompt_version,
            "prompt_versions": prompt_versions(),
            "judge_models": list(self.judge_models),
            "valid": self.valid,
            "retryable": self.retryable,
            "error": self.error,
            "num_criteria": self.num_criteria,
            "criteria_scores": [[c.score, c.criteria_type, "Hurdle" if c.hurdle else "Not"]
                                for c in self.criteria],
            "criteria_scores_only": [c.score for c in self.criteria],
            "total_score": self.total_score,
            "total_hurdle_score": self.total_hurdle_score,
            "raw_score": self.raw_score,
            "score": self.score,
            "hurdle": self.hurdle_record(),
            "summary": self.summary(),
            "recommendations": self.recommendations,
            "sources": [dict(s) for s in self.sources],
            "detailed_results": [c.record() for c in self.criteria],
        }


# --------------------------------------------------------------------------- helpers (public, pure)


def route_of(criterion: CriterionLike) -> Route:
    """``link`` for a link criterion, else ``stage1`` when not grounded, else ``grounded``."""
    if criterion.is_link:
        return "link"
    return "grounded" if criterion.grounded else "stage1"


def link_mode(domain: str, shop_vs_product: str | None) -> Literal["product", "shop", "gaming"]:
    """How a link is checked: Gaming against the criterion, Shopping ``Shop`` tasks as a vendor page,
    everything else (Shopping ``Product``, or no value) as a product purchase page."""
    if (domain or "").strip().lower() == "gaming":
        return "gaming"
    if (domain or "").strip().lower() == "shopping" and (shop_vs_product or "").strip().lower() == "shop":
        return "shop"
    return "product"


_URL_RE = re.compile(r'https?://[^\s\)<>\]"]+')
_TRACKING = ("utm_source", "utm_medium", "utm_campaign")


def _clean_url(url: str) -> str:
    url = url.strip()
    while url and url[-1] in ")]},;:.'`*":
        url = url[:-1]
    return url


def extract_urls(text: str) -> list[str]:
    """The http(s) URLs in ``text``, trailing markdown punctuation removed, first occurrence order."""
    urls = (_clean_url(u) for u in _URL_RE.findall(text or ""))
    return list(dict.fromkeys(u for u in urls if u))


def normalize_url(url: str) -> str:
    """``url`` without ``utm_source``/``utm_medium``/``utm_campaign`` (for matching the same page)."""
    try:
        parsed = urlparse(url.strip())
        query = parse_qs(parsed.query, keep_blank_values=True)
        for key in _TRACKING:
            query.pop(key, None)
        return urlunparse(parsed._replace(query=urlencode(query, doseq=True)))
    except ValueError:
        return url


# --------------------------------------------------------------------------- internals


class _Invalid(Exception):
    """A fault that leaves a criterion ungraded (invalid verdict, failed fetch)."""

    def __init__(self, error: str, retryable: bool) -> None:
        super().__init__(error)
        self.error = error
        self.retryable = retryable


async def _gather(*aws: Awaitable[R]) -> list[R]:
    """``asyncio.gather`` that lets every awaitable finish (no orphaned judge calls or fetches) and then
    raises: a programming error as is, faults as one ``_Invalid`` (retryable only if all of them are)."""
    results = await asyncio.gather(*aws, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    for error in errors:
        if not isinstance(error, _Invalid):
            raise error
    if errors:
        faults: list[_Invalid] = errors  # type: ignore[assignment]
        more = f" (and {len(faults) - 1} more)" if len(faults) > 1 else ""
        raise _Invalid(faults[0].error + more, retryable=all(f.retryable for f in faults))
    return results  # type: ignore[return-value]


@dataclass
class _Source:
    number: int
    url: str
    title: str
    origin: Literal["source", "response_link"]
    content: str | None = None

    def record(self) -> dict[str, Any]:
        return {"number": self.number, "url": self.url, "title": self.title, "origin": self.origin,
                "chars": len(self.content) if self.content is not None else None}


@dataclass
class _Trace:
    verdicts: list[Verdict[Any]] = field(default_factory=list)
    stage1: dict[str, Any] | None = None
    stage2: dict[str, Any] | None = None
    link: dict[str, Any] | None = None
    stage_reached: str = "none"


class _Context:
    """Per-task state shared by all criteria: the judge, the pages, and memoized task-level calls."""

    def __init__(self, task: TaskLike, response: str, sources: Sequence[PageLike], judge: Judge,
                 pages: PageSource, semantics: Semantics, max_source_chars: int | None) -> None:
        self.task = task
        self.response = response
        self.judge = judge
        self.pages = pages
        self.semantics = semantics
        self.max_source_chars = max_source_chars
        self.given = [_Source(number=i + 1, url=str(p.url), title=str(p.title or p.url), origin="source",
                              content=p.content) for i, p in enumerate(sources)]
        known = {normalize_url(s.url) for s in self.given}
        self.catalogue = list(self.given)
        for url in extract_urls(response):
            if normalize_url(url) in known:
                continue
            known.add(normalize_url(url))
            self.catalogue.append(_Source(number=len(self.catalogue) + 1, url=url,
                                          title=f"Link from response: {url}", origin="response_link"))
        self._memo: dict[Any, asyncio.Future[Any]] = {}
        self.recommendations_verdict: Verdict[Recommendations] | None = None
        self.source_map_verdict: Verdict[SourceMap] | None = None
        self.product_sources: dict[str, list[int]] | None = None

    async def once(self, key: Any, factory: Callable[[], Awaitable[R]]) -> R:
        future = self._memo.get(key)
        if future is None:
            future = asyncio.ensure_future(factory())
            self._memo[key] = future
        return await asyncio.shield(future)

    # ----------------------------------------------------------- judge and pages

    async def ask(self, trace: _Trace, prompt: JudgePrompt, variables: dict[str, str], schema: type[T],
                  key: Any = None) -> Verdict[T]:
        """One judge call (memoized under ``key`` when given); an invalid verdict raises ``_Invalid``."""
        if key is None:
            verdict = await self.judge.judge(prompt, variables, schema)
        else:
            verdict = await self.once(("judge", prompt.name, key),
                                      lambda: self.judge.judge(prompt, variables, schema))
        trace.verdicts.append(verdict)
        if not verdict.valid or verdict.data is None:
            raise _Invalid(f"judge gave no valid verdict for {prompt.name} v{prompt.version}: {verdict.error}",
                           retryable=bool(verdict.retryable))
        return verdict

    async def fetch(self, url: str) -> PageLike:
        """The page at ``url``, fetched once per task; a failure raises ``_Invalid``."""
        try:
            return await self.once(("fetch", url), lambda: self.pages.fetch(url))
        except _Invalid:
            raise
        except Exception as exc:  # the page source's fault (ToolError et al.), never a score
            raise _Invalid(f"fetching {url} failed: {type(exc).__name__}: {exc}",
                           retryable=bool(getattr(exc, "retryable", True))) from None

    # ----------------------------------------------------------- task-level steps

    async def recommendations(self, trace: _Trace) -> list[str]:
        verdict = await self.ask(trace, RECOMMENDATIONS, {"query": self.task.prompt, "response": self.response},
                                 Recommendations, key="task")
        self.recommendations_verdict = verdict
        names = (n.strip() for n in verdict.data.recommendations if isinstance(n, str))  # type: ignore[union-attr]
        return list(dict.fromkeys(n for n in names if n))

    async def source_map(self, trace: _Trace, recommendations: list[str]) -> dict[int, list[int]]:
        """``{recommendation index (0-based): [source numbers]}``."""
        if not recommendations or not self.catalogue:
            return {i: [] for i in range(len(recommendations))}
        numbered = "\n".join(f"{i + 1}. {name}" for i, name in enumerate(recommendations))
        listing = "\n".join(
            f"[{s.number}] {s.url}" + (f" | {s.title}" if s.origin == "source" and s.title != s.url else "")
            + (" (link written in the response)" if s.origin == "response_link" else "")
            for s in self.catalogue)
        verdict = await self.ask(trace, SOURCE_MAP, {"response": self.response, "recommendations": numbered,
                                                     "sources": listing}, SourceMap, key="task")
        self.source_map_verdict = verdict
        mapping: dict[int, list[int]] = {i: [] for i in range(len(recommendations))}
        for item in verdict.data.recommendations:  # type: ignore[union-attr]
            index = item.number - 1
            if index in mapping:
                valid = [n for n in item.sources if 1 <= n <= len(self.catalogue)]
                mapping[index] = sorted(set(mapping[index]) | set(valid))
        self.product_sources = {recommendations[i]: numbers for i, numbers in mapping.items()}
        return mapping

    async def product_links(self, trace: _Trace, name: str) -> list[str]:
        verdict = await self.ask(trace, PRODUCT_LINKS, {"product": name, "response": self.response},
                                 ProductLinks, key=name)
        urls = (_clean_url(u) for u in verdict.data.urls if isinstance(u, str))  # type: ignore[union-attr]
        return list(dict.fromkeys(u for u in urls if u))

    async def source_content(self, source: _Source) -> str | None:
        if source.origin == "source":
            return source.content
        page = await self.fetch(source.url)
        return page.content

    def source_block(self, items: Sequence[tuple[_Source, str]]) -> str:
        parts = []
        for source, content in items:
            text = content if self.max_source_chars is None else content[: self.max_source_chars]
            parts.append(f"Source [{source.number}]: {source.title}\nURL: {source.url}\n{text}\n---")
        return "\n".join(parts)


# --------------------------------------------------------------------------- routes


async def _grade_link(ctx: _Context, criterion: CriterionLike, trace: _Trace) -> tuple[int, str]:
    missing_score = 0 if ctx.semantics == "official" else -1
    mode = link_mode(ctx.task.domain, criterion.shop_vs_product)
    trace.stage_reached = "response_text"
    recommendations = await ctx.recommendations(trace)
    if not recommendations:
        trace.stage1 = {"all_pass": False, "mode": mode, "recommendations": [], "product_results": [],
                        "reasoning": "No recommendations identified in the response: no links to check"}
        return missing_score, "Failed: no recommendations identified to check for links"

    links = await _gather(*(ctx.product_links(trace, name) for name in recommendations))
    products = [{"product_name": name, "links_found": urls, "has_links": bool(urls)}
                for name, urls in zip(recommendations, links)]
    all_have_links = all(p["has_links"] for p in products)
    trace.stage1 = {"all_pass": all_have_links, "mode": mode, "recommendations": recommendations,
                    "product_results": products,
                    "reasoning": "All recommendations have links" if all_have_links
                    else "One or more recommendations have no link in the response"}
    if not all_have_links:
        return missing_score, "Failed: not every recommendation has a link in the response"

    trace.stage_reached = "link_verification"
    checks = await _gather(*(_check_product_links(ctx, criterion, mode, name, urls, trace)
                                    for name, urls in zip(recommendations, links)))
    all_pass = all(c["pass"] is True for c in checks)
    trace.link = {"all_pass": all_pass, "mode": mode, "product_results": checks,
                  "reasoning": f"Link verification ({mode} mode): "
                               + ("all valid" if all_pass else "one or more not verified")}
    undetermined = [c for c in checks if c["pass"] is None]
    if undetermined:
        faults = [f for c in undetermined for f in c["faults"]]
        raise _Invalid("link verification left open by a fault: " + "; ".join(f["error"] for f in faults),
                       retryable=all(f["retryable"] for f in faults))
    if all_pass:
        return 1, f"Links provided and all verified ({mode} mode)"
    return -1, f"Links provided but verification failed ({mode} mode)"


async def _check_product_links(ctx: _Context, criterion: CriterionLike, mode: str, name: str,
                               urls: list[str], trace: _Trace) -> dict[str, Any]:
    """Try the links in order; the first valid one passes the recommendation.

    A fault (fetch failure, invalid verdict) on one link is forgiven when a later link is valid;
    otherwise the recommendation is undetermined (``pass`` None)."""
    prompt = {"product": LINK_PRODUCT, "shop": LINK_SHOP, "gaming": LINK_GAMING}[mode]
    minimum = MIN_GAMING_PAGE_CHARS if mode == "gaming" else MIN_PAGE_CHARS
    checked: list[dict[str, Any]] = []
    faults: list[dict[str, Any]] = []
    for url in urls:
        try:
            page = await ctx.fetch(url)
            content = page.content or ""
            if len(content) < minimum:
                checked.append({"url": url, "is_valid": False, "page_type": "error",
                                "reason": f"Page failed to load or has no content ({len(content)} chars)",
                                "verdict": None})
                continue
            variables = {"name": name, "url": url, "page": content}
            key: tuple[str, ...] = (mode, name, url)
            if mode == "gaming":
                variables["criterion"] = criterion.description
                key = (*key, criterion.description)
            verdict = await ctx.ask(trace, prompt, variables, LinkCheck, key=key)
        except _Invalid as fault:
            faults.append({"url": url, "error": fault.error, "retryable": fault.retryable})
            checked.append({"url": url, "is_valid": None, "page_type": "fault", "reason": fault.error,
                            "verdict": None})
            continue
        data: LinkCheck = verdict.data  # type: ignore[assignment]
        checked.append({"url": url, "final_url": str(page.url), "status": getattr(page, "status", None),
                        "is_valid": data.valid,
                        "page_type": data.page_type, "reason": data.reason, "verdict": verdict.record()})
        if data.valid:
            return {"product_name": name, "pass": True, "links_checked": checked, "faults": faults}
    return {"product_name": name, "pass": None if faults else False, "links_checked": checked,
            "faults": faults}


async def _grade_stage1(ctx: _Context, criterion: CriterionLike, trace: _Trace) -> tuple[int, str]:
    trace.stage_reached = "response_text_only"
    verdict = await ctx.ask(trace, STAGE1, {"criterion": criterion.description, "response": ctx.response},
                            Stage1Check)
    data: Stage1Check = verdict.data  # type: ignore[assignment]
    trace.stage1 = {"all_pass": data.passes, "reasoning": data.reasoning,
                    "evaluation_type": data.evaluation_type, "violation_found": data.violation_found,
                    "verdict": verdict.record()}
    return (1 if data.passes else 0), f"Non-grounding check: {data.reasoning}"


def _stage2_passes(evaluation_type: str, required: int, verified: list[bool]) -> bool:
    passed, total = sum(verified), len(verified)
    if evaluation_type == "per_product_any":
        return passed == total if required == -1 else passed >= required
    if evaluation_type == "per_product_all":
        return total > 0 and passed == total
    return all(verified)


def _stage1_passing(recommendations: list[str], data: GroundedStage1Check) -> list[int]:
    """Indices of the recommendations Stage 1 says meet the criterion (names matched exactly, then
    ignoring case and surrounding space)."""
    exact = {name: i for i, name in enumerate(recommendations)}
    loose = {name.strip().casefold(): i for i, name in enumerate(recommendations)}
    found = set()
    for check in data.recommendations_checked:
        if not check.meets_criterion:
            continue
        index = exact.get(check.name, loose.get(check.name.strip().casefold()))
        if index is not None:
            found.add(index)
    return sorted(found)


async def _grade_grounded(ctx: _Context, criterion: CriterionLike, trace: _Trace) -> tuple[int, str]:
    trace.stage_reached = "response_text"
    recommendations = await ctx.recommendations(trace)
    canonical = "\n".join(f"- {name}" for name in recommendations) or NO_RECOMMENDATIONS
    verdict = await ctx.ask(trace, GROUNDED_STAGE1, {"criterion": criterion.description,
                                                     "response": ctx.response, "recommendations": canonical},
                            GroundedStage1Check)
    data: GroundedStage1Check = verdict.data  # type: ignore[assignment]
    trace.stage1 = {"all_pass": data.passes, "reasoning": data.reasoning,
                    "evaluation_type": data.evaluation_type, "required_pass_count": data.required_pass_count,
                    "violation_found": data.violation_found, "recommendations": recommendations,
                    "recommendations_checked": [c.model_dump() for c in data.recommendations_checked],
                    "verdict": verdict.record()}
    if not data.passes:
        return 0, f"Failed response text check: {data.reasoning}"

    trace.stage_reached = "grounded_sources"
    if not recommendations:
        verified, reason = await _stage2_holistic(ctx, criterion, trace)
    else:
        verified, reason = await _stage2_products(ctx, criterion, trace, recommendations, data)
    return (1 if verified else -1), f"Stage 1: {data.reasoning} | Stage 2: {reason}"


async def _stage2_holistic(ctx: _Context, criterion: CriterionLike, trace: _Trace) -> tuple[bool, str]:
    items = [(s, s.content) for s in ctx.given if s.content]
    if not items:
        reason = "No grounding sources available for verification"
        trace.stage2 = {"all_pass": False, "mode": "holistic", "reasoning": reason, "sources_checked": [],
                        "product_results": [], "verdict": None}
        return False, reason
    verdict = await ctx.ask(trace, STAGE2_HOLISTIC, {"criterion": criterion.description,
                                                     "sources": ctx.source_block(items)},  # type: ignore[arg-type]
                            SourceCheck)
    data: SourceCheck = verdict.data  # type: ignore[assignment]
    reason = f"Holistic grounding verification: {data.reason}"
    trace.stage2 = {"all_pass": data.verified, "mode": "holistic", "reasoning": reason,
                    "sources_checked": [s.number for s, _ in items], "product_results": [],
                    "verdict": verdict.record()}
    return data.verified, reason


async def _stage2_products(ctx: _Context, criterion: CriterionLike, trace: _Trace, recommendations: list[str],
                           stage1: GroundedStage1Check) -> tuple[bool, str]:
    mapping = await ctx.source_map(trace, recommendations)
    indices = list(range(len(recommendations)))
    if ctx.semantics == "metis":
        indices = _stage1_passing(recommendations, stage1) or indices

    async def verify(index: int) -> dict[str, Any]:
        name = recommendations[index]
        numbers = mapping.get(index, [])
        sources = [ctx.catalogue[n - 1] for n in numbers]
        contents = await _gather(*(ctx.source_content(s) for s in sources))
        items = [(s, c) for s, c in zip(sources, contents) if c]
        result: dict[str, Any] = {"product_name": name, "source_numbers": numbers,
                                  "sources_checked": [s.number for s, _ in items]}
        if not items:
            return {**result, "pass": False, "reason": "No source content mapped to this recommendation",
                    "verdict": None}
        verdict = await ctx.ask(trace, STAGE2, {"criterion": criterion.description, "recommendation": name,
                                                "sources": ctx.source_block(items)}, SourceCheck)
        data: SourceCheck = verdict.data  # type: ignore[assignment]
        return {**result, "pass": data.verified, "reason": data.reason, "verdict": verdict.record()}

    results = await _gather(*(verify(i) for i in indices))
    verified = [bool(r["pass"]) for r in results]
    passes = _stage2_passes(stage1.evaluation_type, stage1.required_pass_count, verified)
    need = ("all" if stage1.required_pass_count == -1 or stage1.evaluation_type != "per_product_any"
            else f">= {stage1.required_pass_count}")
    reason = (f"Source verification ({sum(verified)}/{len(verified)} verified, {stage1.evaluation_type}, "
              f"needed {need}): " + ("met" if passes else "not met"))
    trace.stage2 = {"all_pass": passes, "mode": "per_recommendation", "reasoning": reason,
                    "evaluation_type": stage1.evaluation_type, "required_pass_count": stage1.required_pass_count,
                    "evaluated": [recommendations[i] for i in indices], "pass_count": sum(verified),
                    "total": len(verified), "product_results": results}
    return passes, reason


_ROUTE_GRADERS = {"link": _grade_link, "stage1": _grade_stage1, "grounded": _grade_grounded}


async def _grade(ctx: _Context, criterion: CriterionLike) -> CriterionResult:
    route = route_of(criterion)
    trace = _Trace()
    score: int | None
    error: str | None = None
    try:
        score, reasoning = await _ROUTE_GRADERS[route](ctx, criterion, trace)
        valid, retryable = True, False
    except _Invalid as fault:
        score, reasoning, valid, retryable, error = None, f"Not graded: {fault.error}", False, fault.retryable, \
            fault.error
    judge_model = next((v.judge_model for v in trace.verdicts if v.judge_model), "")
    return CriterionResult(
        domain=str(ctx.task.domain), task_id=ctx.task.task_id, criterion_id=criterion.id,
        description=criterion.description, criteria_type=str(criterion.criteria_type or ""),
        hurdle=bool(criterion.hurdle), route=route, score=score, stage_reached=trace.stage_reached,
        stage1=trace.stage1, stage2=trace.stage2, link=trace.link, reasoning=reasoning,
        judge_model=judge_model, prompt_version=PROMPT_VERSION, valid=valid, retryable=retryable, error=error,
    )


# --------------------------------------------------------------------------- entry point


async def score_task(task: TaskLike, response: str, sources: Sequence[PageLike], judge: Judge,
                     pages: PageSource, semantics: str = "official", *,
                     max_source_chars: int | None = None) -> AceResult:
    """Grade ``response`` to ``task`` and return the :class:`AceResult`.

    Args:
        task: An ACE task (``domain``, ``task_id``, ``prompt``, ``criteria``).
        response: The model's final answer text.
        sources: The pages the model read (``url``, ``title``, ``content``): Stage 2's evidence, with
            the links written in the response (fetched through ``pages`` when Stage 2 needs them).
        judge: Anything with ``JudgeClient.judge``'s coroutine.
        pages: Where link pages (and response links) are fetched while grading.
        semantics: ``"official"`` (apex-evals rules) or ``"metis"`` (see the module docstring).
        max_source_chars: Cut each source to this many characters in Stage 2 prompts (upstream: no cut).
    """
    if semantics not in SEMANTICS:
        raise ValueError(f"semantics must be one of {SEMANTICS}, got {semantics!r}")
    ctx = _Context(task, response or "", sources, judge, pages, semantics, max_source_chars)  # type: ignore[arg-type]
    criteria = tuple(task.criteria)
    if not criteria:
        return AceResult(domain=str(task.domain), task_id=task.task_id, semantics=semantics,  # type: ignore[arg-type]
                         criteria=(), error="the task has no criteria")
    results = await asyncio.gather(*(_grade(ctx, c) for c in criteria))
    recommendations = None
    if ctx.recommendations_verdict is not None:
        data = ctx.recommendations_verdict.data
        recommendations = {
            "names": list(data.recommendations) if data is not None else [],
            "verdict": ctx.recommendations_verdict.record(),
            "product_source_map": ctx.product_sources,
            "source_map_verdict": ctx.source_map_verdict.record() if ctx.source_map_verdict else None,
        }
    return AceResult(domain=str(task.domain), task_id=task.task_id, semantics=semantics,  # type: ignore[arg-type]
                     criteria=tuple(results), recommendations=recommendations,
                     sources=tuple(s.record() for s in ctx.catalogue))
