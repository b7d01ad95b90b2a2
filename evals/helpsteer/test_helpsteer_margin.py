"""The margin-adapter sanity check: on held pairs of its attribute, does the DPO adapter's implicit reward
rank the chosen response above the rejected one? One item per adapter (--model).

    pytest evals/helpsteer/test_helpsteer_margin.py --backend openai --api-base http://127.0.0.1:8000/v1 \
        --model margin --helpsteer-base-model BASE --helpsteer-attribute verbosity --helpsteer-min-accuracy 0.6

Skipped, saying why, without --helpsteer-base-model. See evals/helpsteer/README.md.
"""

from dataclasses import replace
from typing import Any

import pytest
from eval_protocol.models import EvaluationRow

from evals.helpsteer.benchmark import MARGIN_BENCHMARK, score_margin
from evals.helpsteer.implicit import MODPO_PROMPT_TEMPLATE, ImplicitRewardModel
from metis_pytest import session as metis_session
from metis_pytest.ep import evaluation_test
from metis_pytest.rollout.http import RetryPolicy

_cfg = metis_session.current().cfg
if not _cfg.extra.get("helpsteer_base_model"):
    pytest.skip("the margin check needs --helpsteer-base-model (the adapter is --model)", allow_module_level=True)
if float(_cfg.extra.get("helpsteer_beta", 0.1)) <= 0:
    raise pytest.UsageError("--helpsteer-beta must be > 0: the check measures the adapter's own preference")
_threshold = _cfg.extra.get("helpsteer_min_accuracy")
_threshold_kwargs: dict[str, Any] = {} if _threshold is None else {"passed_threshold": float(_threshold)}


@evaluation_test(MARGIN_BENCHMARK, **_threshold_kwargs)
async def test_helpsteer_margin(row: EvaluationRow) -> EvaluationRow:
    """1 when r(chosen) > r(rejected) under the adapter; the margin and both rewards as metrics."""
    session = metis_session.current()
    extra = session.cfg.extra
    adapter = session.runtime_target(row.input_metadata.completion_params or {})
    base_name = str(extra["helpsteer_base_model"])
    base = replace(adapter, label=base_name, served_model=base_name,
                   api_base=extra.get("helpsteer_base_api_base") or adapter.api_base)
    async with ImplicitRewardModel(
            adapter, base, beta=float(extra.get("helpsteer_beta", 0.1)),
            prompt_template=extra.get("helpsteer_prompt_template") or MODPO_PROMPT_TEMPLATE,
            eos_token=str(extra.get("helpsteer_eos_token") or ""),
            policy=RetryPolicy(max_retries=session.cfg.max_retries, timeout=session.cfg.request_timeout)) as model:
        result = await score_margin("", row.ground_truth, row.input_metadata.dataset_info or {}, reward_model=model)
    row.evaluation_result = result.to_evaluate_result()
    return row
