"""HelpSteer end to end in a child pytest: policies from a folder of generations rated by a scripted judge
(one item per policy; a policy that skipped a prompt fails its item), and the margin-adapter check against
a scripted logprob server (accuracy as the score, the threshold failing an item)."""

from __future__ import annotations

import json
from itertools import islice

import pytest

from evals.helpsteer.dataset import build_pairs, load, prompt_id, unique_prompts
from evals.helpsteer.pareto import compare, read_run
from tests.conftest import shared_file
from tests.evals.test_helpsteer_implicit import LogprobServer, tokenize


def ratings(body) -> str:
    response = body["messages"][-1]["content"].split("Response:\n<<<\n", 1)[1]
    long = "detail" in response
    return json.dumps({"helpfulness": 3 if long else 2, "correctness": 3, "coherence": 4, "complexity": 1,
                       "verbosity": 4 if long else 1})


def test_policies_from_generations_rated_per_policy(pytester: pytest.Pytester, run_eval, scripted_llm_factory) -> None:
    sample = shared_file("helpsteer", "helpsteer2_sample70.jsonl")
    prompts = list(islice(unique_prompts(load(sample)), 4))
    gens = pytester.path / "gens"
    gens.mkdir()
    for policy, text, skip in (("sft", "Short.", 0), ("w1", "More detail here.", 0), ("broken", "x", 1)):
        (gens / f"{policy}.jsonl").write_text("".join(
            json.dumps({"prompt_id": prompt_id(p), "prompt": p, "response": text}) + "\n" for p in prompts[skip:]))
    judge = scripted_llm_factory(default=ratings)
    pytester.makepyfile(test_eval="from evals.helpsteer.test_helpsteer import test_helpsteer  # noqa: F401\n")
    result = run_eval("--dataset", str(sample), "--max-rows", "4", "--backend", "openai",
                      "--api-base", "http://127.0.0.1:9/v1", "--model", "sft,w1,broken",
                      "--helpsteer-generations", str(gens), "--judge-model", "judge", "--judge-backend", "openai",
                      "--judge-api-base", judge.base_url)
    result.assert_outcomes(passed=2, failed=1)  # broken did not answer one prompt
    scores = read_run(run_eval.out)
    assert scores["w1"][prompt_id(prompts[0])]["verbosity"] == 4.0
    points = compare({k: scores[k] for k in ("sft", "w1")}, ["helpfulness", "verbosity"], {"sft": 0.0, "w1": 1.0})
    assert [(p.policy, p.means["verbosity"], p.non_dominated) for p in points] == [("sft", 1.0, False),
                                                                                  ("w1", 4.0, True)]
    s = json.loads((run_eval.out / "helpsteer" / "sft" / "summary.json").read_text())
    assert (s["n"], s["score"]) == (4, 2.0) and s["judge"]["prompt_version"] == "1.0.0"


def test_margin_check_accuracy_and_threshold(pytester: pytest.Pytester, run_eval) -> None:
    sample = shared_file("helpsteer", "helpsteer2_sample70.jsonl")
    pairs = build_pairs(load(sample), "helpfulness")[:8]
    template = "Q: {raw_prompt}\nA:"
    # "longer" gives every token -0.5 against the base's -1: its reward grows with the response's length.
    expected = sum(len(tokenize(template.format(raw_prompt=p.prompt) + p.chosen)) >
                   len(tokenize(template.format(raw_prompt=p.prompt) + p.rejected)) for p in pairs) / len(pairs)
    assert 0 < expected < 1
    with LogprobServer({"same": lambda t: -1.0, "longer": lambda t: -0.5, "base": lambda t: -1.0}) as server:
        pytester.makepyfile(test_eval="from evals.helpsteer.test_helpsteer_margin import test_helpsteer_margin  # noqa: F401\n")
        result = run_eval("--dataset", str(sample), "--max-rows", "8", "--backend", "openai", "--api-base",
                          server.base_url, "--model", "same,longer", "--helpsteer-base-model", "base",
                          "--helpsteer-attribute", "helpfulness", "--helpsteer-prompt-template", template,
                          "--helpsteer-min-accuracy", str(expected))
    result.assert_outcomes(passed=1, failed=1)  # "same" has margin 0 on every pair: accuracy 0
    s = json.loads((run_eval.out / "helpsteer_margin" / "longer" / "summary.json").read_text())
    assert s["score"] == pytest.approx(expected) and s["n"] == 8
    assert any("no EOS token appended" in note for note in s["notes"])  # --helpsteer-eos-token not given
    assert all("</s>" not in body["prompt"] for body in server.bodies)


ARMORM_STUB = """
import evals.helpsteer.armorm as armorm

class StubArmoRM:
    '''ArmoRM's output shape ([batch, 19] rewards) through the real head mapping; no torch, no weights.'''
    loaded = []

    def __init__(self, device="cuda", model_id=armorm.MODEL_ID):
        StubArmoRM.loaded.append(device)

    def rate(self, prompt, response):
        heads = [0.7, 0.5, 0.9, 0.3, 0.1 if len(response) < 10 else 0.9]
        return armorm.helpsteer_ratings([heads + [0.0] * 14])[0]

armorm.ArmoRM = StubArmoRM
"""


def test_armorm_ratings_join_the_judges_when_asked(pytester: pytest.Pytester, run_eval, scripted_llm_factory) -> None:
    sample = shared_file("helpsteer", "helpsteer2_sample70.jsonl")
    prompts = list(islice(unique_prompts(load(sample)), 2))
    gens = pytester.path / "gens"
    gens.mkdir()
    (gens / "w1.jsonl").write_text("".join(json.dumps({"prompt_id": prompt_id(p), "prompt": p,
                                                       "response": "More detail here."}) + "\n" for p in prompts))
    judge = scripted_llm_factory(default=ratings)
    pytester.makeconftest(ARMORM_STUB)
    pytester.makepyfile(test_eval="from evals.helpsteer.test_helpsteer import test_helpsteer  # noqa: F401\n")
    result = run_eval("--dataset", str(sample), "--max-rows", "2", "--backend", "openai",
                      "--api-base", "http://127.0.0.1:9/v1", "--model", "w1", "--helpsteer-generations", str(gens),
                      "--judge-model", "judge", "--judge-backend", "openai", "--judge-api-base", judge.base_url,
                      "--helpsteer-armorm", "--helpsteer-armorm-device", "cpu")
    result.assert_outcomes(passed=1)
    s = json.loads((run_eval.out / "helpsteer" / "w1" / "summary.json").read_text())
    assert s["metrics"]["armorm_verbosity"]["mean"] == pytest.approx(0.9 * 5 - 0.5)
    assert s["metrics"]["armorm_helpfulness"]["mean"] == pytest.approx(0.7 * 5 - 0.5)
    assert s["metrics"]["verbosity"]["mean"] == 4.0  # the judge's ratings are still there
