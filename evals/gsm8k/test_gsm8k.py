"""GSM8K (Cobbe et al. 2021, arXiv:2110.14168) as a Metis evaluation.

    pytest evals/gsm8k --model local --max-rows 20
    pytest evals/gsm8k -n 2 --model openai/gpt-4o-mini,anthropic/claude-3-5-haiku-latest --dataset hf

The row function only calls the pure scorer; rollout, retries, recording and the summary are the
harness's. See evals/gsm8k/README.md for the protocol.
"""

from eval_protocol.models import EvaluationRow

from evals.gsm8k import dataset, prompts, scoring
from metis_pytest.ep import Benchmark, evaluation_test, last_assistant_text

BENCHMARK = Benchmark(
    name=scoring.BENCHMARK,
    version=scoring.VERSION,
    primary_metric=scoring.PRIMARY_METRIC,
    default_source=dataset.DEFAULT_SOURCE,
    load=dataset.load,
    dataset_id=dataset.dataset_id,
    dataset_revision=dataset.dataset_revision,
    prompt_hash=prompts.prompt_hash(),
)


@evaluation_test(BENCHMARK)
def test_gsm8k(row: EvaluationRow) -> EvaluationRow:
    """Score the final answer: <answer> tag (primary), lm-eval strict-match and flexible-extract."""
    result = scoring.score(last_assistant_text(row), str(row.ground_truth))
    row.evaluation_result = result.to_evaluate_result()
    return row
