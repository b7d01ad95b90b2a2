"""ACE, Mercor's AI Consumer Index (arXiv:2512.04921), as a Metis evaluation: one item per task.

    pytest evals/ace                                              # offline demo: no keys, embedded model
    pytest evals/ace -n 8 --model openai/gpt-4o --dataset hf --domains shopping,food
    pytest evals/ace --model m --backend openai --api-base URL --ace-snapshot runs/ace/snapshot.json

The agent loop (web_search, browse_page) is the harness's; this row function grades the answer with
the pure grader (``evals.ace.scoring``), the judge the session resolved and the pages the run saw,
and writes the seed pipeline's per-task files. See evals/ace/README.md for the protocol.
"""

from eval_protocol.models import EvaluationRow

from evals.ace import artifacts, benchmark
from evals.ace.benchmark import BENCHMARK
from evals.ace.dataset import task_from_row
from evals.ace.scoring import score_task
from metis_pytest import session as metis_session
from metis_pytest.conversation import dump_messages, last_assistant_text
from metis_pytest.ep import evaluation_test, judge_target
from metis_pytest.judge import JudgeClient
from metis_pytest.rollout.base import run_index


@evaluation_test(BENCHMARK)
async def test_ace(row: EvaluationRow) -> EvaluationRow:
    """Grade one task's answer: link, Stage 1 and grounded routes, the hurdle rule."""
    session = metis_session.current()
    task = task_from_row(row)
    response = last_assistant_text(row)
    agent = (row.execution_metadata.extra or {}).get("agent") or {}
    sources = benchmark.sources_of(agent)
    semantics = session.cfg.extra.get("ace_semantics", "official")
    cache_dir, recorded = benchmark.judge_cache_dirs(session.cfg)
    async with JudgeClient(judge_target(BENCHMARK), cache_dir=cache_dir, cache_fallbacks=recorded) as judge:
        result = await score_task(task, response, sources, judge, benchmark.web(session), semantics)
    score = result.to_score_result()
    row.evaluation_result = score.to_evaluate_result()
    label = session.label_for(row.input_metadata.completion_params)
    folder = artifacts.task_dir(session.cfg.output_dir, label, task.domain, task.task_id, run_index(row),
                                session.cfg.runs)
    artifacts.write_task(folder, prompt=task.prompt, response=response, messages=dump_messages(row), agent=agent,
                         sources=[{"url": s.url, "title": s.title, "content": s.content} for s in sources],
                         grade=result.artifacts(), breakdown=dict(score.details))
    return row
