"""GSM8K (Cobbe et al. 2021, arXiv:2110.14168) as a Metis evaluation.

    pytest evals/gsm8k --model local --max-rows 20
    pytest evals/gsm8k -n 2 --model openai/gpt-4o-mini,anthropic/claude-3-5-haiku-latest --dataset hf

The row function only calls the registered pure scorer (the same one verl's reward and the RFT
evaluator call); rollout, retries, recording and the summary are the harness's. See
evals/gsm8k/README.md for the protocol.
"""

from eval_protocol.models import EvaluationRow

from evals.gsm8k.benchmark import BENCHMARK
from metis_pytest.ep import evaluation_test, score_row


@evaluation_test(BENCHMARK)
def test_gsm8k(row: EvaluationRow) -> EvaluationRow:
    """Score the final answer: <answer> tag (primary), lm-eval strict-match and flexible-extract."""
    row.evaluation_result = score_row(BENCHMARK, row).to_evaluate_result()
    return row
