"""HelpSteer's two registry entries: ``helpsteer`` (the policies' responses rated on the five attributes)
and ``helpsteer_margin`` (does a DPO margin adapter prefer what the data prefers).

Listed under the ``metis.benchmarks`` entry points. Importing this module is cheap: loaders, the judge
and the logprob client are imported when first used. Both name rollout processors registered here
through the harness's ``register_processor`` seam:

- ``helpsteer_policy``: the harness's single-turn rollout (with ``--resume``: finished rows are not asked
  again), or, with ``--helpsteer-generations DIR``, each policy's responses read from ``DIR/<model>.jsonl``
  (:mod:`evals.helpsteer.policies`) and no request sent; a prompt a policy did not answer is an errored
  row, not retryable.
- ``helpsteer_pairs``: no model call at all; the margin evaluation's row function asks the adapter and
  the base for logprobs through :class:`~evals.helpsteer.implicit.ImplicitRewardModel`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from metis_pytest.registry import Benchmark, DataSpec, Option, ScoreResult, register_benchmark
from metis_pytest.rollout.base import StoredCompletion, register_processor

VERSION = "1.0.0"
MARGIN_VERSION = "1.0.0"
JUDGE_PROMPT_VERSION = "1.0.0"  # evals.helpsteer.judge.PROMPT_VERSION (not imported: it pulls in the judge client)
DEFAULT_JUDGE = "openai/gpt-4o"
DEFAULT_SPLIT = "validation"

OPTIONS = (
    Option("--helpsteer-generations", "helpsteer_generations",
           "Folder of generations, one <model>.jsonl per policy ({prompt_id, prompt, response} lines): "
           "scored instead of asking the models.", affects="rollout"),
    Option("--helpsteer-armorm", "helpsteer_armorm",
           "Also rate each response with ArmoRM's HelpSteer heads (metrics armorm_<attribute>; needs torch, "
           "transformers and a GPU).", default=False, kind="bool", affects="scoring"),
    Option("--helpsteer-armorm-device", "helpsteer_armorm_device", "The torch device ArmoRM runs on.",
           default="cuda", affects="environment"),
)
MARGIN_OPTIONS = (
    Option("--helpsteer-attribute", "helpsteer_attribute",
           "The margin adapter's attribute: helpfulness, correctness, coherence, complexity, verbosity or overall.",
           default="overall", choices=("helpfulness", "correctness", "coherence", "complexity", "verbosity",
                                       "overall"), affects="data"),
    Option("--helpsteer-direction", "helpsteer_direction",
           "higher (HelpSteer's sense) or concise (complexity and verbosity flipped).", default="higher",
           choices=("higher", "concise"), affects="data"),
    Option("--helpsteer-base-model", "helpsteer_base_model",
           "The base model's served name (the adapter is --model); the margin check needs it.", affects="scoring"),
    Option("--helpsteer-base-api-base", "helpsteer_base_api_base",
           "Where the base is served, when not at the adapter's URL.", affects="scoring"),
    Option("--helpsteer-beta", "helpsteer_beta", "The adapter's DPO beta (> 0): scales the reported margins.",
           default=0.1, kind="float", affects="scoring"),
    Option("--helpsteer-prompt-template", "helpsteer_prompt_template",
           "Prompt template with {raw_prompt}, as the adapter was trained (default: MODPO's Human/Assistant).",
           affects="scoring"),
    Option("--helpsteer-eos-token", "helpsteer_eos_token",
           "The model's EOS token as text (e.g. '</s>'), appended to each response as MODPO does; "
           "not given: no EOS.", default="", affects="scoring"),
    Option("--helpsteer-min-accuracy", "helpsteer_min_accuracy",
           "Fail the margin item when the adapter's pair accuracy is below this (e.g. 0.6).", kind="float",
           affects="scoring"),
)


def _split(spec: DataSpec) -> str:
    return spec.split or DEFAULT_SPLIT


def _records(spec: DataSpec) -> list[Any]:
    from evals.helpsteer import dataset

    return dataset.load(spec.source, split=_split(spec), revision=spec.revision)


def _dataset_id(spec: DataSpec) -> str:
    from evals.helpsteer import dataset

    return dataset.dataset_id(spec.source)


def _dataset_revision(spec: DataSpec) -> str:
    from evals.helpsteer import dataset

    return dataset.dataset_revision(spec.source, spec.revision, split=_split(spec))


def _row(row_id: str, prompt: str, info: dict[str, Any], ground_truth: Any = None) -> Any:
    from eval_protocol.models import EvaluationRow, InputMetadata, Message

    return EvaluationRow(messages=[Message(role="user", content=prompt)], ground_truth=ground_truth,
                         input_metadata=InputMetadata(row_id=row_id, dataset_info=info))


def _load(spec: DataSpec) -> list[Any]:
    """One row per distinct prompt (first-seen order), id ``helpsteer-<sha256 prefix of the prompt>``."""
    from evals.helpsteer.dataset import prompt_id, unique_prompts

    return [_row(prompt_id(p), p, {"prompt_id": prompt_id(p), "prompt": p, "split": _split(spec)})
            for p in unique_prompts(_records(spec))]


def _load_pairs(spec: DataSpec) -> list[Any]:
    """One row per MODPO pair of the chosen attribute and direction (the held pairs: ``validation``)."""
    from evals.helpsteer.dataset import build_pairs

    attribute = spec.option("helpsteer_attribute", "overall")
    direction = spec.option("helpsteer_direction", "higher")
    return [_row(p.pair_id, p.prompt, {"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected,
                                       "attribute": attribute, "direction": direction,
                                       "chosen_score": p.chosen_score, "rejected_score": p.rejected_score},
                 ground_truth="chosen")
            for p in build_pairs(_records(spec), attribute, direction=direction)]


async def score(completion: str, ground_truth: Any, metadata: Mapping[str, Any], *, judge: Any,
                armorm: Mapping[str, float] | None = None) -> ScoreResult:
    """A policy's response rated by the attribute judge (and ArmoRM when its ratings are handed in)."""
    from evals.helpsteer.judge import rate
    from evals.helpsteer.scoring import attribute_result

    verdict = await rate(judge, str(metadata.get("prompt", "")), completion)
    ratings = verdict.data.as_dict() if verdict.valid and verdict.data is not None else None
    return attribute_result(completion, ratings, judge_record=verdict.record(), armorm=armorm)


async def score_margin(completion: str, ground_truth: Any, metadata: Mapping[str, Any], *,
                       reward_model: Any) -> ScoreResult:
    """1.0 when the adapter's implicit reward ranks the pair's chosen response above its rejected one."""
    prompt = str(metadata["prompt"])
    chosen = await reward_model.score(prompt, str(metadata["chosen"]))
    rejected = await reward_model.score(prompt, str(metadata["rejected"]))
    margin = chosen.reward - rejected.reward
    return ScoreResult(score=1.0 if margin > 0 else 0.0,
                       metrics={"margin": margin, "r_chosen": chosen.reward, "r_rejected": rejected.reward},
                       reason=f"r(chosen)={chosen.reward:.4f} r(rejected)={rejected.reward:.4f}",
                       details={"chosen": vars(chosen), "rejected": vars(rejected)})


# ----------------------------------------------------------------------------- processors


def generations_lookup(folder: Path) -> Any:
    """``(params, row) -> StoredCompletion | None`` from ``folder/<model label>.jsonl``."""
    from evals.helpsteer.policies import read_generations
    from metis_pytest import session as metis_session

    cache: dict[str, dict[str, str]] = {}

    def lookup(params: dict[str, Any], row: Any) -> StoredCompletion | None:
        label = metis_session.current().label_for(params)
        if label not in cache:
            cache[label] = read_generations(folder / f"{label}.jsonl")
        response = cache[label].get(str(row.input_metadata.row_id))
        return None if response is None else StoredCompletion(content=response, source=str(folder / f"{label}.jsonl"))

    return lookup


@register_processor("helpsteer_policy")
def policy_processor(session: Any, bench: Any, lookup: Any) -> Any:
    folder = session.cfg.extra.get("helpsteer_generations")
    if folder:
        from metis_pytest.rollout.replay import ReplayProcessor

        return ReplayProcessor(generations_lookup(Path(folder)), str(folder))
    from metis_pytest.rollout.base import processor_factory

    return processor_factory("single_turn")(session, bench, lookup)


@register_processor("helpsteer_pairs")
def pairs_processor(session: Any, bench: Any, lookup: Any) -> Any:
    from metis_pytest.rollout.replay import ReplayProcessor

    return ReplayProcessor(lambda params, row: StoredCompletion(content=""), "helpsteer pairs (no generation)")


def _margin_notes(cfg: Any) -> list[str]:
    return [] if cfg.extra.get("helpsteer_eos_token") else [
        "no EOS token appended to responses (--helpsteer-eos-token not given); MODPO includes it"]


BENCHMARK = register_benchmark(Benchmark(
    name="helpsteer",
    version=VERSION,
    primary_metric="helpfulness",
    default_source="hf",
    load=_load,
    dataset_id=_dataset_id,
    dataset_revision=_dataset_revision,
    score=score,
    processor="helpsteer_policy",
    judge_prompt_version=JUDGE_PROMPT_VERSION,
    options=OPTIONS,
    default_judge=DEFAULT_JUDGE,
    metric_notes={"helpfulness": "the attribute judge's 0-4 rating (HelpSteer's scale); see calibration",
                  "verbosity": "0-4, higher = more detail relative to what the prompt asks"},
))

MARGIN_BENCHMARK = register_benchmark(Benchmark(
    name="helpsteer_margin",
    version=MARGIN_VERSION,
    primary_metric="accuracy",
    default_source="hf",
    load=_load_pairs,
    dataset_id=_dataset_id,
    dataset_revision=_dataset_revision,
    score=score_margin,
    processor="helpsteer_pairs",
    options=MARGIN_OPTIONS,
    notes=_margin_notes,
    metric_notes={"accuracy": "share of held pairs with r(chosen) > r(rejected) (ties count as wrong)",
                  "margin": "mean r(chosen) - r(rejected), in units of beta * nats"},
))
