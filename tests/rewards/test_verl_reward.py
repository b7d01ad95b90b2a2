"""verl's reward function (metis_pytest.rewards.verl): registry dispatch, verl's calling contract, invalid
scores, no heavy imports, and the judged (ACE) path against a scripted judge."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
import subprocess
import sys
from dataclasses import asdict, replace
from typing import Any

import pytest

from evals.ace.dataset import Criterion, Task
from evals.gsm8k.benchmark import BENCHMARK as GSM8K
from metis_pytest import registry
from metis_pytest.registry import Benchmark, ScoreResult, get_benchmark
from metis_pytest.rewards import verl as reward
from metis_pytest.rewards.verl import (
    InvalidScore,
    StaticPages,
    compute_score,
    compute_score_async,
    resolve_benchmark,
    reward_keys,
)
from metis_pytest.testing import Rule
from metis_pytest.tools.web import Page

GSM8K_KEYS = {"score", "answer_tag", "strict_match", "flexible_extract", "valid"}
def _fake(name: str, *, score: Any = None, dataset_id: str | None = None, **fields: Any) -> Benchmark:
    def hub_id(spec: Any) -> str:
        if dataset_id is None:
            raise ValueError("no Hub source")
        return dataset_id

    return replace(GSM8K, name=name, dataset_id=hub_id, score=score or GSM8K.score, **fields)


@pytest.fixture
def fake_registry(monkeypatch: pytest.MonkeyPatch):
    """Register benchmarks for one test only (the registry is process-wide)."""
    registry.benchmark_names()  # entry points first, so they do not land on top of the fakes later

    def add(bench: Benchmark) -> Benchmark:
        monkeypatch.setitem(registry._REGISTRY, bench.name, bench)
        return bench

    return add


# ----------------------------------------------------------------------------- dispatch


@pytest.mark.parametrize("source", ["gsm8k", "openai/gsm8k", "hf:openai/gsm8k", "GSM8K", "someone/GSM8K/"])
def test_gsm8k_is_found_by_name_and_by_dataset_id(source: str) -> None:
    assert resolve_benchmark(source) is get_benchmark("gsm8k")
    assert compute_score(source, "so <answer>72</answer>", "72")["score"] == 1.0


def test_ace_is_found_by_its_hub_id() -> None:
    assert resolve_benchmark("mercor/ACE") is get_benchmark("ace")


def test_an_unknown_data_source_is_a_key_error_naming_the_known_benchmarks() -> None:
    with pytest.raises(KeyError) as info:
        compute_score("lighteval/MATH", "<answer>1</answer>", "1")
    message = str(info.value)
    assert "lighteval/MATH" in message and "gsm8k" in message and "ace" in message
    assert "openai/gsm8k" in message and "mercor/ACE" in message  # the data sources they declare


def test_a_benchmark_is_found_by_the_data_source_it_declares(fake_registry) -> None:
    by_hub_id = fake_registry(_fake("word_problems", dataset_id="acme/wp-2024"))
    fake_registry(_fake("no_hub"))  # a benchmark without a Hub source declares nothing, and is no error
    assert resolve_benchmark("acme/wp-2024") is by_hub_id
    assert resolve_benchmark("hf:acme/wp-2024") is by_hub_id
    assert reward.declared_sources(get_benchmark("no_hub")) == ()
    assert reward.declared_sources(by_hub_id) == ("acme/wp-2024",)


def test_a_data_sources_attribute_declares_data_sources(fake_registry) -> None:
    class Listed:
        """A spec with a ``data_sources`` attribute (the Benchmark fields plus one)."""

        def __init__(self) -> None:
            self.__dict__.update(GSM8K.__dict__)
            self.name = "listed"
            self.data_sources = ("acme/listed", "acme/listed-v2")

    bench: Any = Listed()
    fake_registry(bench)
    assert resolve_benchmark("acme/listed-v2") is bench
    assert reward.declared_sources(bench)[:2] == ("acme/listed", "acme/listed-v2")


def test_two_benchmarks_declaring_one_data_source_are_ambiguous(fake_registry) -> None:
    fake_registry(_fake("first", dataset_id="acme/shared"))
    fake_registry(_fake("second", dataset_id="acme/shared"))
    with pytest.raises(KeyError, match="several benchmarks.*first, second"):
        resolve_benchmark("acme/shared")


def test_an_exact_name_wins_over_a_declared_source(fake_registry) -> None:
    fake_registry(_fake("claims_gsm8k", dataset_id="gsm8k"))
    assert resolve_benchmark("gsm8k") is get_benchmark("gsm8k")


# ----------------------------------------------------------------------------- verl's contract


def test_the_signature_is_verls() -> None:
    for fn in (compute_score, compute_score_async):
        params = inspect.signature(fn).parameters
        assert list(params)[:4] == ["data_source", "solution_str", "ground_truth", "extra_info"]
        assert params["extra_info"].default is None
        assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    # verl's reward managers await a coroutine function and run a plain one in a thread.
    assert not inspect.iscoroutinefunction(compute_score)
    assert inspect.iscoroutinefunction(compute_score_async)


def test_called_with_keywords_and_extra_kwargs_as_verl_does() -> None:
    extra_info = {"split": "train", "index": 3, "answer": "... #### 1,080", "question": "How many?",
                  "num_turns": 2, "rollout_reward_scores": {}}
    out = compute_score(data_source="openai/gsm8k", solution_str="It is <answer>1,080</answer>.",
                        ground_truth="1080", extra_info=extra_info, reward_router_address="127.0.0.1:9",
                        reward_model_tokenizer=None, some_future_keyword=object())
    assert out == {"score": 1.0, "answer_tag": 1.0, "strict_match": 0.0, "flexible_extract": 1.0, "valid": 1.0}
    assert all(type(v) is float for v in out.values())


@pytest.mark.parametrize("completion", ["<answer>72</answer>", "#### 72", "no idea", "", "<answer>-72</answer>",
                                        "72 then 73"])
def test_every_value_is_a_float_and_the_keys_never_change(completion: str) -> None:
    out = compute_score("gsm8k", completion, "72", None)
    assert set(out) == GSM8K_KEYS == set(reward_keys(GSM8K))
    assert all(type(v) is float and math.isfinite(v) for v in out.values())
    result = GSM8K.score(completion, "72", {})
    assert set(result.metrics) <= set(out)  # no metric of the scorer is lost
    assert out["score"] == result.score and all(out[k] == v for k, v in result.metrics.items())


def test_loaded_from_its_file_as_verl_does() -> None:
    """verl's loader: ``spec_from_file_location`` under a module name of its own, then ``getattr``."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("custom_module_metis_test", reward.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fn = module.compute_score
    out = fn(data_source="openai/gsm8k", solution_str="<answer>72</answer>", ground_truth="72",
             extra_info={"index": 0}, reward_router_address=None)
    assert out == compute_score("gsm8k", "<answer>72</answer>", "72")
    assert module.logger.name == "metis_pytest.rewards.verl"


def test_a_reference_solution_is_accepted_as_ground_truth() -> None:
    gold = "48/2 = <<48/2=24>>24\n48+24 = <<48+24=72>>72\n#### 72"
    assert compute_score("gsm8k", "<answer>72</answer>", gold) == compute_score("gsm8k", "<answer>72</answer>", "72")


def test_the_async_function_scores_a_rule_based_benchmark_too() -> None:
    out = asyncio.run(compute_score_async("gsm8k", "<answer>72</answer>", "72", {}, reward_router_address=None))
    assert out == compute_score("gsm8k", "<answer>72</answer>", "72", {})


def test_numpy_values_from_parquet_reach_the_scorer_as_python_values(fake_registry) -> None:
    np = pytest.importorskip("numpy")
    seen: list[Any] = []

    def scorer(completion: str, ground_truth: Any, metadata: Any) -> ScoreResult:
        seen.append(metadata)
        return ScoreResult(score=1.0, metrics={"answer_tag": 1.0})

    fake_registry(_fake("np_fake", score=scorer))
    compute_score("np_fake", "x", "1", {"criteria": np.array([{"hurdle": np.bool_(True)}], dtype=object),
                                        "index": np.int64(4)})
    assert seen == [{"criteria": [{"hurdle": True}], "index": 4}]
    assert type(seen[0]["criteria"][0]["hurdle"]) is bool and type(seen[0]["index"]) is int


# ----------------------------------------------------------------------------- invalid scores


def _invalid(completion: str, ground_truth: Any, metadata: Any) -> ScoreResult:
    return ScoreResult(score=float("nan"), metrics={}, reason="the judge never answered in JSON", valid=False,
                       retryable=True)


def test_an_invalid_score_is_zero_with_valid_zero_and_a_warning(fake_registry, caplog) -> None:
    fake_registry(_fake("judged_fake", score=_invalid))
    with caplog.at_level(logging.WARNING, logger="metis_pytest.rewards.verl"):
        out = compute_score("judged_fake", "anything", "1", {})
    assert out == {"score": 0.0, "answer_tag": 0.0, "strict_match": 0.0, "flexible_extract": 0.0, "valid": 0.0}
    assert all(type(v) is float for v in out.values())
    [record] = [r for r in caplog.records if r.name == "metis_pytest.rewards.verl"]
    assert record.levelno == logging.WARNING
    assert "judged_fake" in record.getMessage() and "the judge never answered in JSON" in record.getMessage()
    assert "valid=0.0" in record.getMessage()


def test_on_invalid_raise_stops_instead(fake_registry) -> None:
    fake_registry(_fake("judged_fake", score=_invalid))
    with pytest.raises(InvalidScore, match="the judge never answered in JSON") as info:
        compute_score("judged_fake", "anything", "1", {}, on_invalid="raise")
    assert info.value.result.retryable and info.value.benchmark == "judged_fake"
    with pytest.raises(ValueError, match="on_invalid"):
        compute_score("judged_fake", "anything", "1", {}, on_invalid="ignore")


def test_a_metric_named_like_a_reward_key_is_refused(fake_registry) -> None:
    fake_registry(_fake("clash", primary_metric="valid"))
    with pytest.raises(ValueError, match="valid"):
        compute_score("clash", "<answer>1</answer>", "1")


def test_an_undeclared_metric_is_not_passed_on(fake_registry) -> None:
    def scorer(completion: str, ground_truth: Any, metadata: Any) -> ScoreResult:
        return ScoreResult(score=0.5, metrics={"answer_tag": 0.5, "only_sometimes": 1.0})

    fake_registry(_fake("varying", score=scorer, metric_notes={}))
    assert compute_score("varying", "x", "1") == {"score": 0.5, "answer_tag": 0.5, "valid": 1.0}


# ----------------------------------------------------------------------------- imports


def test_importing_and_scoring_gsm8k_import_neither_verl_torch_nor_eval_protocol() -> None:
    code = """
import json, sys
heavy = ("verl", "torch", "eval_protocol", "litellm")
def loaded():
    return sorted(m for m in sys.modules if m.split(".")[0] in heavy)
import metis_pytest.rewards.verl as reward
after_import = loaded()
out = reward.compute_score("openai/gsm8k", "<answer>72</answer>", "72", {"index": 0})
print(json.dumps({"import": after_import, "score": loaded(), "out": out}))
"""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["import"] == [] and report["score"] == [], report
    assert report["out"]["score"] == 1.0
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "metis_pytest.rewards.verl" in imported
    assert not {m for m in imported if m.split(".")[0] in ("verl", "torch", "eval_protocol")}


# ----------------------------------------------------------------------------- the judge


def test_the_judge_defaults_to_the_benchmarks_default_judge() -> None:
    target = reward.judge_target(get_benchmark("ace"), {})
    assert target.litellm_model == "openai/gpt-4o" and target.label == "judge:openai/gpt-4o"
    assert target.api_base  # the provider's URL, never a policy's


def test_judge_settings_come_from_extra_info_then_kwargs_never_the_environment(monkeypatch) -> None:
    ace = get_benchmark("ace")
    monkeypatch.setenv("METIS_JUDGE_MODEL", "from-env")  # configuration never comes from the environment
    assert reward.judge_target(ace, {}).litellm_model == "openai/gpt-4o"
    assert reward.judge_target(ace, {}, judge_model="from-kwargs", judge_backend="openai",
                               judge_api_base="http://127.0.0.1:1/v1").served_model == "from-kwargs"
    target = reward.judge_target(ace, {"judge_model": "from-row"}, judge_model="from-kwargs",
                                 judge_api_base="http://127.0.0.1:2/v1", judge_api_key_env="JUDGE_KEY")
    assert target.served_model == "from-row" and target.api_base == "http://127.0.0.1:2/v1"
    assert target.backend == "openai" and target.api_key_env == "JUDGE_KEY"


def test_the_embedded_model_as_judge_needs_a_running_server() -> None:
    with pytest.raises(ValueError, match="judge_api_base"):
        reward.judge_target(get_benchmark("ace"), {"judge_model": "local"})


def test_static_pages_serve_the_rows_pages_and_a_missing_one_as_a_dead_link() -> None:
    pages = StaticPages(reward._pages_of({"https://a.example/x": {"title": "A", "content": "alpha"},
                                          "https://b.example/": "beta"}))
    assert asyncio.run(pages.fetch("https://a.example/x/")).content == "alpha"
    assert asyncio.run(pages.fetch("https://b.example")).content == "beta"
    missing = asyncio.run(pages.fetch("https://made.up/page"))
    assert missing.content == "" and missing.status == 404 and missing.url == "https://made.up/page"
    with pytest.raises(TypeError):
        reward._pages_of("https://a.example/x")


# ----------------------------------------------------------------------------- ACE with a scripted judge

STAGE1_PASS = json.dumps({"passes": True, "reasoning": "the brownie is vegan", "evaluation_type": "holistic"})
STAGE1_FAIL = json.dumps({"passes": False, "reasoning": "it has butter", "evaluation_type": "holistic"})
VEGAN = Criterion(id="1", description="Recommends a vegan dessert", hurdle=True, grounded=False,
                  criteria_type="Meets dietary requirement", is_link=False)
TASK = Task(domain="food", task_id="901", prompt="Suggest one vegan dessert I can bake tonight.", workflow="Recipe",
            criteria=(VEGAN,))
RESPONSE = "Bake a **Vegan Brownie**: flour, cocoa, sugar, oil and oat milk, 25 minutes at 180 C."


def ace_info(task: Task, server: Any, **extra: Any) -> dict[str, Any]:
    """What a verl row's extra_info holds for ACE: the task (as task_to_row writes it) and the judge."""
    return {"domain": task.domain, "task_id": task.task_id, "workflow": task.workflow, "prompt": task.prompt,
            "criteria": [asdict(c) for c in task.criteria], "judge_model": "judge-model",
            "judge_backend": "openai", "judge_api_base": server.base_url, **extra}


async def test_ace_async_reward_with_a_scripted_judge(scripted_llm_factory) -> None:
    server = scripted_llm_factory(default=STAGE1_PASS)
    out = await compute_score_async("mercor/ACE", RESPONSE, json.dumps([asdict(VEGAN)]), ace_info(TASK, server),
                                    reward_router_address=None)
    assert out == {"score": 1.0, "ace_score": 1.0, "hurdle_pass": 1.0, "valid": 1.0}
    assert set(out) == set(reward_keys(get_benchmark("ace")))
    assert all(type(v) is float for v in out.values())
    [request] = server.requests
    assert request.body["model"] == "judge-model" and request.body["temperature"] == 0.0
    assert "Recommends a vegan dessert" in request.body["messages"][1]["content"]
    assert RESPONSE in request.body["messages"][1]["content"]

    server.set_rules([], default=STAGE1_FAIL)  # a failed hurdle: the task scores 0
    out = await compute_score_async("ace", RESPONSE, None, ace_info(TASK, server))
    assert out == {"score": 0.0, "ace_score": 0.0, "hurdle_pass": 0.0, "valid": 1.0}


async def test_ace_judge_that_never_answers_in_json_is_an_invalid_reward(scripted_llm_factory, caplog) -> None:
    server = scripted_llm_factory(default="Looks vegan to me!")
    with caplog.at_level(logging.WARNING, logger="metis_pytest.rewards.verl"):
        out = await compute_score_async("ace", RESPONSE, None, ace_info(TASK, server))
    assert out == {"score": 0.0, "ace_score": 0.0, "hurdle_pass": 0.0, "valid": 0.0}
    assert server.request_count == 3  # the first ask and two corrective re-asks
    assert any("ace" in r.getMessage() and "valid=0.0" in r.getMessage() for r in caplog.records)


def test_ace_under_the_plain_compute_score_runs_its_coroutine(scripted_llm_factory) -> None:
    server = scripted_llm_factory(default=STAGE1_PASS)
    assert compute_score("ace", RESPONSE, None, ace_info(TASK, server))["score"] == 1.0


async def test_ace_under_the_plain_compute_score_inside_a_loop_names_the_async_one(scripted_llm_factory) -> None:
    server = scripted_llm_factory(default=STAGE1_PASS)
    with pytest.raises(TypeError, match="compute_score_async"):
        compute_score("ace", RESPONSE, None, ace_info(TASK, server))


def _by_prompt(system_starts: str) -> Any:
    return lambda body: body["messages"][0]["content"].startswith(system_starts)


async def test_ace_sources_and_pages_from_extra_info_reach_the_grader(scripted_llm_factory) -> None:
    grounded = Criterion(id="2", description="Recommends a dessert without eggs", hurdle=False, grounded=True,
                         criteria_type="Meets dietary requirement", is_link=False)
    link = Criterion(id="3", description="Provides a link to buy the mix", hurdle=False, grounded=False,
                     criteria_type="Provides link(s)", is_link=True)
    task = replace(TASK, criteria=(VEGAN, grounded, link))
    shop = "https://shop.example/vegan-brownie-mix"
    response = f"{RESPONSE} Buy the mix at {shop}"
    server = scripted_llm_factory(rules=[
        Rule(_by_prompt("You read an assistant's answer"), json.dumps({"recommendations": ["Vegan Brownie"]})),
        Rule(_by_prompt("You match an assistant's recommendations"),
             json.dumps({"recommendations": [{"number": 1, "sources": [1]}]})),
        Rule(_by_prompt("You pick out the web links"), json.dumps({"urls": [shop]})),
        Rule(_by_prompt("You classify a scraped web page"),
             json.dumps({"valid": True, "page_type": "product_page", "reason": "add to cart"})),
        Rule(_by_prompt("You grade an assistant's response against one criterion, using only the text of the "
                        "response, recommendation"),
             json.dumps({"passes": True, "reasoning": "no eggs", "evaluation_type": "per_product_all",
                         "recommendations_checked": [{"name": "Vegan Brownie", "meets_criterion": True}]})),
        Rule(_by_prompt("You check a grading decision"), json.dumps({"verified": True, "reason": "source 1"})),
    ], default=STAGE1_PASS)
    recipe = {"url": "https://recipes.example/vegan-brownie", "title": "Vegan brownie",
              "content": "A fudgy brownie made without eggs or dairy, with oat milk."}
    page = {"url": shop, "title": "Vegan brownie mix", "content": "Vegan brownie mix. Add to cart. " * 10}
    info = ace_info(task, server, sources=[recipe], pages=[page])
    out = await compute_score_async("ace", response, None, info)
    assert out == {"score": 1.0, "ace_score": 1.0, "hurdle_pass": 1.0, "valid": 1.0}
    stage2 = [r.body for r in server.requests if r.body["messages"][0]["content"].startswith("You check a grading")]
    assert len(stage2) == 1 and "made without eggs or dairy" in stage2[0]["messages"][1]["content"]
    link_checks = [r.body for r in server.requests if r.body["messages"][0]["content"].startswith("You classify")]
    assert len(link_checks) == 1 and "Add to cart" in link_checks[0]["messages"][1]["content"]

    # The same link, with no page for it in the row: read as a dead link (-1), not an invalid score.
    out = await compute_score_async("ace", response, None, ace_info(task, server, sources=[recipe]))
    assert out["valid"] == 1.0 and out["score"] == pytest.approx((1 + 1 - 1) / 3)
    # A page source given as the ``pages`` keyword is used as is.
    fetched: list[str] = []

    class Web:
        async def fetch(self, url: str) -> Page:
            fetched.append(url)
            return Page(url=url, title="mix", content=page["content"])

    out = await compute_score_async("ace", response, None, ace_info(task, server, sources=[recipe]), pages=Web())
    assert out["score"] == 1.0 and fetched == [shop]


# ----------------------------------------------------------------------------- multi-turn transcripts

QWEN_TRANSCRIPT = (  # what verl's tool agent loop decodes with skip_special_tokens=True (Qwen, Hermes tools)
    'Let me search.\n<tool_call>\n{"name": "web_search", "arguments": {"query": "vegan dessert"}}\n</tool_call>\n'
    "user\n<tool_response>\n1. Vegan brownies - https://x.example\n</tool_response>\nassistant\n" + RESPONSE)


@pytest.mark.parametrize(("decoded", "answer"), [
    (QWEN_TRANSCRIPT, RESPONSE),
    # special tokens kept (skip_special_tokens=False)
    ("<tool_call>{}</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\npage\n</tool_response><|im_end|>\n"
     "<|im_start|>assistant\nThe answer.<|im_end|>", "The answer."),
    # two tool rounds: only the text after the last result
    ("<tool_response>a</tool_response>\nassistant\nfirst<tool_call>{}</tool_call>\nuser\n<tool_response>b"
     "</tool_response>\nassistant\nsecond", "second"),
    # out of turns: the last turn still calls a tool, so there is no answer
    ("<tool_response>a</tool_response>\nassistant\n<tool_call>\n{\"name\": \"browse_page\"}\n</tool_call>", ""),
    # a cut-off tool call (max response length) is dropped too
    ("<tool_response>a</tool_response>\nassistant\nPartial answer <tool_call>{\"name\": \"web_s", "Partial answer"),
    # no tool used: the response itself; "assistant" inside the text is kept
    ("I am your assistant\nand this is it.", "I am your assistant\nand this is it."),
    ("", ""),
])
def test_final_turn_of_a_decoded_multi_turn_response(decoded: str, answer: str) -> None:
    assert reward.final_turn(decoded) == answer


async def test_ace_grades_the_final_turn_of_a_verl_transcript_as_pytest_grades_the_last_message(
        scripted_llm_factory) -> None:
    server = scripted_llm_factory(default=STAGE1_PASS)
    whole = await compute_score_async("ace", QWEN_TRANSCRIPT, None, ace_info(TASK, server))
    alone = await compute_score_async("ace", RESPONSE, None, ace_info(TASK, server))
    assert whole == alone == {"score": 1.0, "ace_score": 1.0, "hurdle_pass": 1.0, "valid": 1.0}
    graded = [r.body["messages"][1]["content"] for r in server.requests]
    assert all(RESPONSE in g and "<tool_response>" not in g and "web_search" not in g for g in graded)


def test_a_benchmark_without_tools_is_graded_on_the_whole_response() -> None:
    text = "<tool_response>x</tool_response>\nassistant\n<answer>5</answer>"
    assert compute_score("gsm8k", text, "5")["score"] == 1.0  # GSM8K reads its tag wherever it is
    assert get_benchmark("gsm8k").toolbox is None
