"""ACE's registry entry: how the harness runs it (agent loop, one item per task, its own options).

Listed under the ``metis.benchmarks`` entry points as ``ace``. Importing this module is cheap: the
loader, the tools and the judge client are imported when they are first used.

Live runs search with SearchAPI.io (``SEARCHAPI_IO_KEY``) and read pages with Jina Reader
(``JINA_API_KEY`` optional), recording every search and page, the agent's and the grader's, into
``<output-dir>/ace/snapshot.json`` (or ``--ace-snapshot FILE`` when that file does not exist yet);
``--ace-snapshot FILE`` of an existing file replays it offline, so the grader sees exactly what the
agent saw. With no keys and no options, ``pytest evals/ace`` is an **offline demonstration**: the
project's own demo tasks and recorded pages (``datasets/ace_demo/``), the embedded model as agent and
as judge; it says so in its summary and it is not an ACE score.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from metis_pytest.registry import Benchmark, DataSpec, Option, register_benchmark

VERSION = "1.0.0"
JUDGE_PROMPT_VERSION = "1.0.0"  # evals.ace.prompts.PROMPT_VERSION (not imported here: it pulls in the judge client)
DEMO_DIR = Path(__file__).resolve().parents[2] / "datasets" / "ace_demo"
DEMO_SNAPSHOT = DEMO_DIR / "snapshot.json"
DEFAULT_JUDGE = "openai/gpt-4o"
DEMO_NOTE = ("offline demonstration: Metis's own demo tasks and recorded pages (datasets/ace_demo), with the "
             "embedded SmolLM2-135M as agent and as judge. This is NOT an ACE score.")

OPTIONS = (
    Option("--domains", "ace_domains", "ACE domains to run (comma list): shopping, food, gaming, diy. Default: all.",
           default=(), kind="list", affects="data"),
    Option("--task-ids", "ace_task_ids", "ACE task ids to run (comma list). Default: all.",
           default=(), kind="list", affects="data"),
    Option("--ace-semantics", "ace_semantics",
           "Scoring rules: official (apex-evals) or metis (see evals/ace/README.md).",
           default="official", choices=("official", "metis"), affects="scoring"),
    Option("--ace-snapshot", "ace_snapshot",
           "Snapshot of searches and pages: replayed offline if the file exists, else recorded into it.",
           affects="environment"),
    Option("--searchapi-url", "ace_searchapi_url",
           "SearchAPI.io endpoint (a proxy, or a fake in tests). Default: https://www.searchapi.io/api/v1/search.",
           affects="environment"),
    Option("--jina-url", "ace_jina_url", "Jina Reader endpoint. Default: https://r.jina.ai/.", affects="environment"),
    Option("--max-turns", "ace_max_turns", "Model turns that may call tools, per task.", default=10, kind="int",
           affects="rollout"),
    Option("--max-searches", "ace_max_searches", "web_search calls allowed per task.", default=5, kind="int",
           affects="rollout"),
    Option("--max-page-reads", "ace_max_page_reads", "browse_page calls allowed per task.", default=5, kind="int",
           affects="rollout"),
    Option("--page-chars", "ace_page_chars",
           "Characters of a page the model sees (the grader gets the full text).", default=8000, kind="int",
           affects="rollout"),
)


def is_demo(cfg: Any) -> bool:
    """No keys and no choices: the embedded model, no dataset, no snapshot, no search key."""
    return (tuple(cfg.models) == ("local",) and not cfg.dataset and not cfg.judge_model
            and not cfg.extra.get("ace_snapshot") and not os.environ.get("SEARCHAPI_IO_KEY"))


def _source(cfg: Any) -> str:
    return str(DEMO_DIR) if is_demo(cfg) else "hf"


def _judge(cfg: Any) -> str:
    return "local" if is_demo(cfg) else DEFAULT_JUDGE


def _notes(cfg: Any) -> list[str]:
    return [DEMO_NOTE] if is_demo(cfg) else []


def replay_root(cfg: Any) -> Path | None:
    """The run folder behind ``--replay DIR`` (DIR is a run folder or its ``ace/<model>`` folder)."""
    if cfg.replay is None:
        return None
    path = Path(cfg.replay)
    return path.parent.parent if path.parent.name == "ace" else path


def replayed_snapshot(cfg: Any) -> Path | None:
    """Under ``--replay``, the web the recorded run saw (its ``ace/snapshot.json``), if it kept one."""
    root = replay_root(cfg)
    path = root / "ace" / "snapshot.json" if root is not None else None
    return path if path is not None and path.exists() else None


def judge_cache_dirs(cfg: Any) -> tuple[Path, tuple[Path, ...]]:
    """Where verdicts are cached (this run's folder) and, under ``--replay``, the recorded run's cache,
    read first, so a replay asks the judge only what the recording never asked."""
    root = replay_root(cfg)
    recorded = (root / "ace" / ".judge-cache",) if root is not None else ()
    return cfg.output_dir / "ace" / ".judge-cache", recorded


def _requires_env(cfg: Any) -> tuple[str, ...]:
    """A live run searches: SearchAPI.io's key. A replayed snapshot (``--ace-snapshot`` of an existing
    file, or under ``--replay`` the recorded run's) and the demo need none."""
    chosen = cfg.extra.get("ace_snapshot")
    replayed = (chosen and Path(chosen).exists()) or (not chosen and replayed_snapshot(cfg) is not None)
    return () if is_demo(cfg) or replayed else ("SEARCHAPI_IO_KEY",)


def _load(spec: DataSpec) -> list[Any]:
    from evals.ace import dataset

    return dataset.load(spec, domains=spec.option("ace_domains") or None, task_ids=spec.option("ace_task_ids") or None)


def _dataset_id(spec: DataSpec) -> str:
    from evals.ace import dataset

    return dataset.dataset_id(spec)


def _dataset_revision(spec: DataSpec) -> str:
    from evals.ace import dataset

    return dataset.dataset_revision(spec)


# ----------------------------------------------------------------------------- the web


class ClosestQuery:
    """The demo's web: a replayed snapshot that answers a query it never recorded with the recorded
    query sharing the most words (a small model's queries cannot be predicted). Only the demo uses it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.replay = True

    async def search(self, query: str, num: int = 10) -> Any:
        from metis_pytest.tools.web import ToolError

        try:
            return await self.inner.search(query, num)
        except ToolError:
            words = set(re.findall(r"\w+", query.lower()))
            recorded = self.inner.snapshot.searches()
            if not recorded:
                raise
            best = max(recorded, key=lambda q: (len(words & set(re.findall(r"\w+", q.lower()))), q))
            return recorded[best][:num]

    async def fetch(self, url: str) -> Any:
        return await self.inner.fetch(url)


def web(session: Any) -> Any:
    """This process's web for ACE: a replayed snapshot, or the live clients recording into one."""
    cached = session.cache.get("ace_web")
    if cached is not None:
        return cached
    from metis_pytest.tools.snapshot import Snapshot
    from metis_pytest.tools.web import JinaReaderClient, LiveWeb, SearchAPIClient

    cfg = session.cfg
    chosen = cfg.extra.get("ace_snapshot")
    recorded = None if chosen else replayed_snapshot(cfg)
    path = Path(chosen) if chosen else recorded or (DEMO_SNAPSHOT if is_demo(cfg) else cfg.output_dir / "ace" / "snapshot.json")
    if path.exists() and (chosen or recorded or is_demo(cfg)):
        replayed = Snapshot(path, mode="replay").web()
        made: Any = ClosestQuery(replayed) if is_demo(cfg) and not chosen else replayed
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        searcher = SearchAPIClient(**({"base_url": cfg.extra["ace_searchapi_url"]} if cfg.extra.get("ace_searchapi_url") else {}))
        reader = JinaReaderClient(**({"base_url": cfg.extra["ace_jina_url"]} if cfg.extra.get("ace_jina_url") else {}))
        snapshot = Snapshot(path, mode="record")
        session.finalizers.append(snapshot.close)  # the journal becomes the JSON file at session end
        made = snapshot.web(LiveWeb(searcher, reader))
    session.cache["ace_web"] = made
    return made


def toolbox(session: Any, row: Any) -> Any:
    from metis_pytest.tools.toolbox import WebToolbox

    extra = session.cfg.extra
    return WebToolbox(web(session), max_searches=int(extra.get("ace_max_searches", 5)),
                      max_reads=int(extra.get("ace_max_page_reads", 5)), page_chars=int(extra.get("ace_page_chars", 8000)))


def sources_of(agent: Mapping[str, Any]) -> list[Any]:
    """The pages the agent read (full text, one per URL), from its tool records: the grader's sources."""
    seen, out = set(), []
    for record in agent.get("tool_records") or []:
        if record.get("name") == "browse_page" and record.get("ok") and record.get("page_url") not in seen:
            seen.add(record.get("page_url"))
            out.append(SimpleNamespace(url=record.get("page_url") or record.get("url"), title=record.get("title") or "",
                                       content=record.get("content") or ""))
    return out


async def score(completion: str, ground_truth: Any, metadata: Mapping[str, Any], *, judge: Any, pages: Any,
                sources: Any = (), semantics: str = "official") -> Any:
    """The ACE scorer as the registry exposes it: the task from the row's metadata, graded by ``judge``
    with ``pages`` for link checks and ``sources`` (the pages the agent read) for Stage 2."""
    from evals.ace.dataset import task_from_info
    from evals.ace.scoring import score_task

    result = await score_task(task_from_info(metadata), completion, sources, judge, pages, semantics)
    return result.to_score_result()


def _prompt_hash() -> str:
    """ACE sends the task's own prompt and no system prompt; what can change completions is the tool
    protocol (schemas) the agent is given."""
    import hashlib
    import json

    from metis_pytest.tools.toolbox import WebToolbox

    schemas = WebToolbox.__new__(WebToolbox).schemas()
    return hashlib.sha256(json.dumps(schemas, sort_keys=True).encode()).hexdigest()[:12]


BENCHMARK = register_benchmark(Benchmark(
    name="ace",
    version=VERSION,
    primary_metric="ace_score",
    default_source=_source,
    load=_load,
    dataset_id=_dataset_id,
    dataset_revision=_dataset_revision,
    score=score,
    processor="agent",
    axes=("domain", "task_id"),
    judge_prompt_version=JUDGE_PROMPT_VERSION,
    prompt_hash=_prompt_hash,
    options=OPTIONS,
    breakdown=("domain",),
    toolbox=toolbox,
    default_judge=_judge,
    notes=_notes,
    requires_env=_requires_env,
    metric_notes={"ace_score": "task score in [-1, 1]: the criteria's total (0 when a hurdle fails) over their number",
                  "hurdle_pass": "share of tasks whose hurdle criteria all scored +1"},
))
