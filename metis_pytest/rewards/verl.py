"""verl reward functions backed by the benchmark registry: the same scorer as the pytest evaluation.

Point verl's custom reward function at this module (verl 0.9: ``reward.custom_reward_function``, whose
``path`` may name a module as ``pkg://``; older releases: the top-level ``custom_reward_function``, a file
path, which 0.9 still migrates)::

    reward.custom_reward_function.path=pkg://metis_pytest.rewards.verl
    # or the file: $(python -c 'import metis_pytest.rewards.verl as m; print(m.__file__)')
    reward.custom_reward_function.name=compute_score          # rule-based benchmarks (GSM8K)
    reward.custom_reward_function.name=compute_score_async    # judged benchmarks (ACE)
    +reward.custom_reward_function.reward_kwargs.on_invalid=raise   # optional, see "Invalid scores"

Loaded from its file, the module runs under another name (verl's ``custom_module...``); it only imports
``metis_pytest`` absolutely and logs under ``metis_pytest.rewards.verl`` either way.

verl calls the function with keywords, ``compute_score(data_source=..., solution_str=...,
ground_truth=..., extra_info=..., **kwargs)``, where ``kwargs`` are ``custom_reward_function.reward_kwargs``
plus whatever its reward manager adds (``reward_router_address``, ``reward_model_tokenizer``...);
keywords this module does not use are ignored. verl 0.9's reward-loop managers (``reward.reward_manager.name``,
default ``naive``) await a coroutine function and run a plain one in a worker thread; the legacy managers
(``verl/workers/reward_manager``) call a plain one directly. So a judged benchmark under the plain
``compute_score`` runs its coroutine with ``asyncio.run`` (one event loop per call) when no loop is
running in the calling thread; use ``compute_score_async`` where verl can await it. The data source is the
column named by ``data.reward_fn_key`` (default ``data_source``).

**Which benchmark.** ``data_source`` (the dataset's ``data_source`` column) is looked up in the registry
(:func:`resolve_benchmark`), in this order, the first rule that matches deciding:

1. a registered benchmark of exactly that name (``"gsm8k"``);
2. one whose name is, ignoring case, the last ``/``-separated part of the data source once an ``hf:``
   prefix is dropped (``"openai/gsm8k"``, ``"hf:openai/gsm8k"`` -> ``gsm8k``; ``"mercor/ACE"`` -> ``ace``);
3. one that declares the data source: listed in a ``data_sources`` attribute of the spec, or equal to the
   dataset id the benchmark gives its Hub source (``bench.dataset_id(DataSpec("hf"))``: ``openai/gsm8k``,
   ``mercor/ACE``).

Two benchmarks matching the same rule, or none matching at all, is a ``KeyError`` that names the
registered benchmarks and the data sources they declare.

**What verl gets.** A dict of floats with the same keys for every call on one benchmark
(:func:`reward_keys`): ``score``, one entry per declared metric of the benchmark (its
``primary_metric``, then the metrics its ``metric_notes`` name; for GSM8K ``answer_tag``,
``strict_match``, ``flexible_extract``) and ``valid`` (1.0 or 0.0). verl logs every key beside
``score`` and stacks each key over the batch, indexing every row by the first row's keys, so a key
present on one row and not another would fail the batch: a declared metric a result lacks is 0.0 and a
metric the benchmark does not declare (ACE's per-route means) is not passed on. A batch that mixes
benchmarks with different metrics has the same problem; give each its own run, or its own metrics.

**Invalid scores.** A scorer that could not decide (``ScoreResult.valid`` False: a judge that never
answered in its JSON contract, a page that could not be fetched) is never a 0 in the pytest evaluation.
verl needs a number for every sample, so by default (``on_invalid="zero"``) it gets ``score`` 0.0 and
every metric 0.0 with ``valid`` 0.0, logged as a warning (logger ``metis_pytest.rewards.verl``) with
the scorer's reason; ``valid`` is logged by verl beside the reward, so the share of invalid rewards is
visible per step (its mean). ``on_invalid="raise"`` (``reward_kwargs: {on_invalid: raise}``) raises
:class:`InvalidScore` instead, stopping the run.

**The judge** (``compute_score_async`` on a judged benchmark): each setting is read from
``extra_info``, then ``kwargs`` (verl's ``reward.custom_reward_function.reward_kwargs``), first found
wins: ``judge_model``, ``judge_backend``, ``judge_api_base``, ``judge_api_key_env`` (the *name* of
the variable holding the key; the key itself comes from the environment only), ``judge_cache_dir``.
Configuration does not come from environment variables.

With no judge model the benchmark's ``default_judge`` is used (ACE: ``openai/gpt-4o``). The target is
resolved as ``--judge-model``/``--judge-backend``/``--judge-api-base``/``--judge-api-key-env`` would be
(:func:`metis_pytest.backends.resolve_target` on a :class:`~metis_pytest.options.MetisConfig`); the
embedded ``local`` model is started only by a pytest session, so here it needs a running server
(``judge_backend="openai"`` and its URL). A ready judge (anything with ``JudgeClient.judge``) can be
passed as the ``judge`` keyword instead.

ACE also needs the pages the agent read (Stage 2's sources) and pages for its link checks, both from
``extra_info``: ``sources``, a list of ``{url, title, content}``, and ``pages``, a list of
``{url, title, content}`` or a mapping ``{url: {title, content}}`` / ``{url: content}``. Links are
checked against those pages and the sources; a URL found in neither reads as a page with no content
(what a dead link gives), so a made-up link fails its check rather than invalidating the score. A live
page source (``metis_pytest.tools.web.JinaReaderClient()``) can be passed as the ``pages`` keyword.
``semantics`` (``official`` or ``metis``) is read from ``extra_info`` or the kwargs.

**Multi-turn transcripts.** Under verl's tool agent loop ``solution_str`` is the whole response
decoded: every assistant turn, its tool calls and the tool results verl appended between them. The
pytest evaluation grades only the final assistant message, so for a benchmark that uses tools (its spec
has a ``toolbox``) the reward grades :func:`final_turn` of it: the text after the last
``</tool_response>`` (Hermes-style templates: Qwen, and verl's default tool parser), without the
assistant role header the template left there once special tokens were dropped, without any
``<tool_call>`` block a turn still made, and without leftover ``<|im_end|>``-style markers. A transcript
with no tool result is graded whole, minus the same markers.

Importing this module imports neither verl, torch nor Eval Protocol; scoring GSM8K imports none of
them either.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metis_pytest.registry import Benchmark, DataSpec, ScoreResult, benchmark_names, get_benchmark

if TYPE_CHECKING:
    from metis_pytest.backends.base import ModelTarget

__all__ = [
    "final_turn",
    "INVALID_POLICIES",
    "JUDGE_SETTINGS",
    "InvalidScore",
    "StaticPages",
    "compute_score",
    "compute_score_async",
    "declared_sources",
    "judge_target",
    "resolve_benchmark",
    "reward_keys",
    "to_reward",
]

logger = logging.getLogger("metis_pytest.rewards.verl")  # also when verl loads this file by path

INVALID_POLICIES: tuple[str, ...] = ("zero", "raise")
JUDGE_SETTINGS: tuple[str, ...] = ("judge_model", "judge_backend", "judge_api_base", "judge_api_key_env",
                                   "judge_cache_dir")
_HF_PREFIX = "hf:"
_HUB_SOURCE = "hf"
_MISSING_PAGE_STATUS = 404
# Dataset ids of each benchmark's Hub source, computed once per spec (may import the benchmark's loader).
_HUB_IDS: dict[int, tuple[Benchmark, str | None]] = {}
_METRICS: dict[int, tuple[Benchmark, tuple[str, ...]]] = {}


class InvalidScore(RuntimeError):
    """Raised under ``on_invalid="raise"`` when the scorer marked its score invalid."""

    def __init__(self, benchmark: str, result: ScoreResult) -> None:
        super().__init__(f"{benchmark}: the scorer could not score this sample (retryable="
                         f"{result.retryable}): {result.reason}")
        self.benchmark = benchmark
        self.result = result


# ----------------------------------------------------------------------------- which benchmark


def declared_sources(bench: Benchmark) -> tuple[str, ...]:
    """The data sources ``bench`` declares: its ``data_sources`` attribute, if any, and the dataset id
    of its Hub source (``dataset_id(DataSpec("hf"))``), when it has one."""
    declared = [str(s) for s in getattr(bench, "data_sources", ()) or ()]
    cached = _HUB_IDS.get(id(bench))
    if cached is None or cached[0] is not bench:
        try:
            hub: str | None = str(bench.dataset_id(DataSpec(source=_HUB_SOURCE)))
        except Exception as exc:  # a benchmark without a Hub source
            logger.debug("benchmark %r has no Hub dataset id: %s", bench.name, exc)
            hub = None
        cached = _HUB_IDS[id(bench)] = (bench, hub)
    if cached[1] and cached[1] not in declared:
        declared.append(cached[1])
    return tuple(declared)


def _one(data_source: str, rule: str, matches: list[str]) -> Benchmark | None:
    if len(matches) > 1:
        raise KeyError(f"data source {data_source!r} matches several benchmarks ({rule}): {', '.join(matches)}")
    return get_benchmark(matches[0]) if matches else None


def resolve_benchmark(data_source: str) -> Benchmark:
    """The registered benchmark for verl's ``data_source`` (the rule is in the module docstring)."""
    source = str(data_source).strip()
    names = benchmark_names()
    if source in names:
        return get_benchmark(source)
    tail = source.removeprefix(_HF_PREFIX).rstrip("/").rsplit("/", 1)[-1].casefold()
    found = _one(source, "by the last part of its name", [n for n in names if n.casefold() == tail])
    if found is not None:
        return found
    wanted = {source, source.removeprefix(_HF_PREFIX)}
    found = _one(source, "by the data sources they declare",
                 [n for n in names if wanted & set(declared_sources(get_benchmark(n)))])
    if found is not None:
        return found
    known = "; ".join(f"{n} ({', '.join(declared_sources(get_benchmark(n))) or 'no declared data source'})"
                      for n in names)
    raise KeyError(f"unknown data source {data_source!r}: no registered benchmark has that name, the name "
                   f"{tail!r} or declares it; known: {known or 'none'}")


# ----------------------------------------------------------------------------- what verl gets


def _metric_names(bench: Benchmark) -> tuple[str, ...]:
    """The benchmark's declared metrics: a ``metric_names`` attribute if it has one, else its primary metric
    and the metrics its ``metric_notes`` name (computed once per spec)."""
    cached = _METRICS.get(id(bench))
    if cached is not None and cached[0] is bench:
        return cached[1]
    names = getattr(bench, "metric_names", None) or (bench.primary_metric, *bench.metric_notes)
    metrics = tuple(dict.fromkeys(str(n) for n in names))
    clash = {"score", "valid"} & set(metrics)
    if clash:
        raise ValueError(f"benchmark {bench.name!r} has metric(s) named {sorted(clash)}, which verl's reward "
                         "dict uses for the reward and its validity")
    _METRICS[id(bench)] = (bench, metrics)
    return metrics


def reward_keys(bench: Benchmark) -> tuple[str, ...]:
    """The keys of every dict :func:`compute_score` returns for ``bench``, ``score`` first."""
    return ("score", *_metric_names(bench), "valid")


def to_reward(bench: Benchmark, result: ScoreResult, *, on_invalid: str = "zero",
              data_source: str | None = None) -> dict[str, float]:
    """``result`` as verl's reward dict (see "What verl gets" and "Invalid scores" above)."""
    if on_invalid not in INVALID_POLICIES:
        raise ValueError(f"on_invalid={on_invalid!r}: expected one of {', '.join(INVALID_POLICIES)}")
    metrics = _metric_names(bench)
    if not result.valid:
        if on_invalid == "raise":
            raise InvalidScore(bench.name, result)
        logger.warning("metis reward: %s score for data source %r is invalid (retryable=%s), verl gets "
                       "score 0.0 with valid=0.0: %s", bench.name, data_source or bench.name, result.retryable,
                       result.reason)
        return {"score": 0.0, **dict.fromkeys(metrics, 0.0), "valid": 0.0}
    return {"score": float(result.score), **{m: float(result.metrics.get(m, 0.0)) for m in metrics},
            "valid": 1.0}


_SCALARS = (str, int, float, bool, type(None), bytes)


def _plain(value: Any) -> Any:
    """``value`` with numpy arrays and scalars (what verl's parquet rows hold) made Python lists and scalars."""
    if type(value) in _SCALARS:
        return value
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy, without importing it
        return _plain(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _metadata(extra_info: Mapping[str, Any] | None) -> dict[str, Any]:
    return _plain(extra_info) if extra_info else {}


def _is_judged(bench: Benchmark) -> bool:
    return inspect.iscoroutinefunction(bench.score)


_TOOL_CALL = re.compile(r"<tool_call>.*?(</tool_call>|$)", re.S)
_MARKER = re.compile(r"<\|(im_start|im_end|endoftext|eot_id|start_header_id|end_header_id)\|>")


def final_turn(solution_str: str) -> str:
    """The last assistant turn of a decoded multi-turn response (see "Multi-turn transcripts")."""
    text = solution_str.rsplit("</tool_response>", 1)[-1]
    text = _TOOL_CALL.sub("", _MARKER.sub("\n", text)).strip()
    first, _, rest = text.partition("\n")
    if first.strip() == "assistant":
        text = rest.strip()
    return text


def _answer(bench: Benchmark, solution_str: str) -> str:
    return final_turn(solution_str) if bench.toolbox is not None else solution_str


def _on_invalid(kwargs: Mapping[str, Any]) -> str:
    return str(kwargs.get("on_invalid") or "zero")


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: Mapping[str, Any] | None = None,
                  **kwargs: Any) -> dict[str, float]:
    """verl's reward for one sample, from the registered scorer of ``data_source``'s benchmark.

    A judged benchmark is scored with :func:`compute_score_async` under ``asyncio.run`` (outside an event
    loop: verl runs a plain reward function in a worker thread); inside a running loop it is a
    ``TypeError`` that names ``compute_score_async``."""
    bench = resolve_benchmark(data_source)
    if _is_judged(bench):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(compute_score_async(data_source, solution_str, ground_truth, extra_info, **kwargs))
        raise TypeError(f"benchmark {bench.name!r} is scored by a judge (a coroutine) and an event loop is "
                        "running: use compute_score_async (custom_reward_function.name=compute_score_async)")
    result = bench.score(_answer(bench, solution_str), ground_truth, _metadata(extra_info))
    return to_reward(bench, result, on_invalid=_on_invalid(kwargs), data_source=data_source)


# ----------------------------------------------------------------------------- judged benchmarks


def _setting(name: str, extra_info: Mapping[str, Any], kwargs: Mapping[str, Any]) -> str | None:
    for value in (extra_info.get(name), kwargs.get(name)):
        if value is not None and str(value).strip():
            return str(value).strip()
    return None


def judge_target(bench: Benchmark, extra_info: Mapping[str, Any] | None = None, **kwargs: Any) -> ModelTarget:
    """The judge's target for ``bench``, from ``extra_info`` and ``kwargs`` (see above),
    resolved as a pytest session resolves ``--judge-model`` (never the policy's endpoint)."""
    from metis_pytest.backends import resolve_target
    from metis_pytest.options import MetisConfig
    from metis_pytest.session import JUDGE_PREFIX

    info = extra_info or {}
    cfg = MetisConfig(models=(), judge_model=_setting("judge_model", info, kwargs),
                      judge_backend=_setting("judge_backend", info, kwargs),
                      judge_api_base=_setting("judge_api_base", info, kwargs),
                      judge_api_key_env=_setting("judge_api_key_env", info, kwargs))
    model = bench.judge_for(cfg)
    if not model:
        raise LookupError(f"benchmark {bench.name!r} has no default judge: give judge_model (extra_info, "
                          "or reward_kwargs)")
    judge_cfg = dataclasses.replace(cfg, backend=cfg.judge_backend, api_base=cfg.judge_api_base,
                                    api_key_env=cfg.judge_api_key_env)
    target = dataclasses.replace(resolve_target(model, judge_cfg), label=f"{JUDGE_PREFIX}{model}")
    if target.openai_wire and not target.api_base:
        raise ValueError(f"judge {model!r} resolves to backend {target.backend!r} with no URL (the embedded "
                         "model is started only by a pytest session): give judge_backend='openai' and "
                         "judge_api_base=<URL of a running OpenAI-compatible server>")
    return target


def _page(item: Any, url: str | None = None) -> Any:
    from metis_pytest.tools.web import Page

    if isinstance(item, str):
        return Page(url=url or "", title="", content=item)
    if not isinstance(item, Mapping):
        raise TypeError(f"a page must be a mapping with url, title and content, got {type(item).__name__}")
    return Page.from_json({**item, "url": item.get("url") or url or ""})


def _pages_of(value: Any) -> list[Any]:
    if not value:
        return []
    if isinstance(value, Mapping):
        return [_page(item, str(url)) for url, item in value.items()]
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"expected a list of {{url, title, content}} pages, got {type(value).__name__}")
    return [_page(item) for item in value]


class StaticPages:
    """A page source over the pages a row provides: a URL it lacks reads as an empty page (a dead link)."""

    def __init__(self, pages: Iterable[Any]) -> None:
        self.pages: dict[str, Any] = {}
        for page in pages:
            self.pages.setdefault(page.url, page)
            self.pages.setdefault(page.url.rstrip("/"), page)

    async def fetch(self, url: str) -> Any:
        from metis_pytest.tools.web import Page

        page = self.pages.get(url) or self.pages.get(url.rstrip("/"))
        return page if page is not None else Page(url=url, title="", content="", status=_MISSING_PAGE_STATUS)


async def compute_score_async(data_source: str, solution_str: str, ground_truth: Any,
                              extra_info: Mapping[str, Any] | None = None, **kwargs: Any) -> dict[str, float]:
    """verl's reward for one sample, awaiting a judged scorer (a plain one is called as is).

    The judge is built from ``extra_info``/``kwargs``/the environment (:func:`judge_target`) unless a
    ``judge`` keyword is given, and closed after the sample; ``pages``, ``sources`` and ``semantics`` are
    handed to the scorer when its signature takes them."""
    bench = resolve_benchmark(data_source)
    info = _metadata(extra_info)
    if not _is_judged(bench):
        result = bench.score(_answer(bench, solution_str), ground_truth, info)
        return to_reward(bench, result, on_invalid=_on_invalid(kwargs), data_source=data_source)
    from metis_pytest.judge import JudgeClient

    sources = _pages_of(info.get("sources"))
    pages = kwargs.get("pages")
    if pages is None or not hasattr(pages, "fetch"):
        pages = StaticPages([*_pages_of(info.get("pages")), *_pages_of(pages), *sources])
    semantics = info.get("semantics") or kwargs.get("semantics")
    async with contextlib.AsyncExitStack() as stack:
        judge = kwargs.get("judge")
        if judge is None:
            cache = _setting("judge_cache_dir", info, kwargs)
            client = JudgeClient(judge_target(bench, info, **kwargs), cache_dir=Path(cache) if cache else None)
            judge = await stack.enter_async_context(client)
        offered: dict[str, Any] = {"judge": judge, "pages": pages, "sources": sources}
        if semantics:
            offered["semantics"] = str(semantics)
        params = inspect.signature(bench.score).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        result = await bench.score(_answer(bench, solution_str), ground_truth, info,
                                   **{k: v for k, v in offered.items() if takes_any or k in params})
    return to_reward(bench, result, on_invalid=_on_invalid(kwargs), data_source=data_source)
