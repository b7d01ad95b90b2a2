"""HelpSteer attribute scoring of policies' responses: one item per policy (--model), five 0-4 ratings.

    pytest evals/helpsteer --backend openai --api-base http://127.0.0.1:8000/v1 --model sft,w0.5,w1 \
        --judge-model openai/gpt-4o-mini --max-rows 200
    pytest evals/helpsteer --helpsteer-generations gens/ --model sft,w0.5,w1 --judge-model openai/gpt-4o-mini

The rollout (or the folder of generations) is the harness's; this row function rates the response with
the attribute judge the session resolved. See evals/helpsteer/README.md.
"""

import asyncio

from eval_protocol.models import EvaluationRow

from evals.helpsteer import armorm
from evals.helpsteer.benchmark import BENCHMARK, score
from metis_pytest import session as metis_session
from metis_pytest.conversation import last_assistant_text
from metis_pytest.ep import evaluation_test, judge_target
from metis_pytest.judge import JudgeClient


@evaluation_test(BENCHMARK)
async def test_helpsteer(row: EvaluationRow) -> EvaluationRow:
    """Rate one response: helpfulness (primary), correctness, coherence, complexity, verbosity; lengths."""
    session = metis_session.current()
    info = row.input_metadata.dataset_info or {}
    response = last_assistant_text(row)
    ratings = None
    if session.cfg.extra.get("helpsteer_armorm"):  # one model per process, loaded on first use
        model = session.cache.get("helpsteer_armorm")
        if model is None:
            model = session.cache["helpsteer_armorm"] = armorm.ArmoRM(
                device=session.cfg.extra.get("helpsteer_armorm_device") or "cuda")
        ratings = await asyncio.to_thread(model.rate, str(info.get("prompt", "")), response)
    async with JudgeClient(judge_target(BENCHMARK),
                           cache_dir=session.cfg.output_dir / "helpsteer" / ".judge-cache") as judge:
        result = await score(response, row.ground_truth, info, judge=judge, armorm=ratings)
    row.evaluation_result = result.to_evaluate_result()
    return row
