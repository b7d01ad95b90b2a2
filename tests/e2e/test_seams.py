"""The seams every benchmark builds on, through a toy benchmark defined in the test (no harness edit):
item axes and -k, the keyed store across sessions, invalid and transient scores, replay, a registered
backend prepared by the xdist controller, and the judge as a second target."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import last_user, read_jsonl

TOY = '''
from pathlib import Path
from eval_protocol.models import EvaluationRow, InputMetadata, Message
from metis_pytest.ep import evaluation_test, score_row
from metis_pytest.registry import Benchmark, ScoreResult

def load(spec):
    return [EvaluationRow(messages=[Message(role="user", content=f"{dom} question {i}")], ground_truth=str(i),
                          input_metadata=InputMetadata(row_id=f"{dom}-{i}", dataset_info={"domain": dom}))
            for dom in ("food", "gaming") for i in range(3)]

def score(completion, ground_truth, metadata):
    if Path("invalid.flag").exists() and ground_truth == "1":
        return ScoreResult(score=0.0, valid=False, retryable=True, reason="judge answered prose, not JSON")
    if Path("timeout.flag").exists() and ground_truth == "1":
        raise TimeoutError("judge timed out")
    if Path("crash.flag").exists() and ground_truth == "1":
        raise ZeroDivisionError("scorer bug")
    ok = completion.strip() == ground_truth
    return ScoreResult(score=float(ok), metrics={"exact": float(ok)}, reason=f"{completion!r} vs {ground_truth}")

TOY = Benchmark(name="toy", version="1.0", primary_metric="exact", default_source="builtin", load=load,
                dataset_id=lambda spec: "toy", dataset_revision=lambda spec: "r1", score=score, axes=("domain",))

@evaluation_test(TOY)
def test_toy(row: EvaluationRow) -> EvaluationRow:
    row.evaluation_result = score_row(TOY, row).to_evaluate_result()
    return row
'''


def answer(body: dict[str, Any]) -> str:
    return last_user(body).rsplit(" ", 1)[-1]


@pytest.fixture
def toy(pytester: pytest.Pytester, run_eval, scripted_llm_factory):
    pytester.makepyfile(test_toy=TOY)
    server = scripted_llm_factory(default=answer)

    def run(*args: str) -> pytest.RunResult:
        return run_eval("test_toy.py", "--backend", "openai", "--api-base", server.base_url, "--model", "m", *args)

    run.server = server  # type: ignore[attr-defined]
    run.out = run_eval.out  # type: ignore[attr-defined]
    return run


def toy_summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "toy" / "m" / "summary.json").read_text())


def test_item_axes_spread_the_work_and_k_selects(toy) -> None:
    toy("--co", "-q").stdout.fnmatch_lines(["*test_toy[[]m-food[]]", "*test_toy[[]m-gaming[]]"])
    toy("-k", "food").assert_outcomes(passed=1)
    s = toy_summary(toy.out)
    assert (s["n"], s["selection"]["keyword"], s["selection"]["rows_this_session"]) == (3, "food", 3)
    toy("-k", "gaming").assert_outcomes(passed=1)
    s = toy_summary(toy.out)  # the second item adds to the model's record instead of replacing it
    assert (s["n"], s["score"], s["selection"]["rows_this_session"]) == (6, 1.0, 3)


def test_an_invalid_score_is_errored_and_retryable_never_a_zero(toy, pytester) -> None:
    (pytester.path / "invalid.flag").write_text("")
    result = toy()
    result.assert_outcomes(passed=0, failed=2)
    result.stdout.fnmatch_lines(["*toy [[]m[]]: 1 of 3 rows errored after retries*"])
    s = toy_summary(toy.out)
    assert (s["n"], s["n_errored"], s["n_retryable"], s["score"]) == (4, 2, 2, 1.0)
    [bad, *_] = [r for r in read_jsonl(toy.out / "toy" / "m" / "rows.jsonl") if r["status"] == "errored"]
    assert bad["error"] == {"message": "judge answered prose, not JSON", "stage": "scoring", "retryable": True}
    assert bad["score"] is None and bad["completion"] == "1"


def test_a_transient_scorer_error_counts_toward_the_error_rate_only(toy, pytester) -> None:
    (pytester.path / "timeout.flag").write_text("")
    toy("--max-error-rate", "0.5").assert_outcomes(passed=2)
    s = toy_summary(toy.out)
    assert (s["n_errored"], s["n_retryable"]) == (2, 2)
    (pytester.path / "timeout.flag").unlink()
    toy.server.reset()
    toy("--resume").assert_outcomes(passed=2)  # the judge is back: re-scored, no new model call
    assert toy.server.request_count == 0
    assert toy_summary(toy.out)["n_errored"] == 0


def test_a_crashed_scorer_is_re_scored_from_its_stored_completion(toy, pytester) -> None:
    (pytester.path / "crash.flag").write_text("")
    toy().assert_outcomes(failed=2)
    assert toy.server.request_count == 6
    (pytester.path / "crash.flag").unlink()  # the scorer is fixed
    toy.server.reset()
    result = toy("--resume")
    result.assert_outcomes(passed=2)
    assert toy.server.request_count == 0
    s = toy_summary(toy.out)
    assert (s["n"], s["n_errored"], s["n_resumed"], s["score"]) == (6, 0, 6, 1.0)
    result.stdout.fnmatch_lines(["*resume: reused 6 stored completions, sent 0 rows*"])


def test_replay_scores_a_recorded_run_with_no_model(toy, run_eval, pytester) -> None:
    toy().assert_outcomes(passed=2)
    recorded = pytester.path / "recorded"
    (toy.out).rename(recorded)
    toy.server.stop()  # nothing to talk to, and no key: replay needs neither
    result = run_eval("test_toy.py", "--backend", "api", "--model", "openai/m", "--replay", str(recorded))
    result.assert_outcomes(passed=0, failed=2)  # a model label that was never recorded: every row errored
    result = run_eval("test_toy.py", "--backend", "openai", "--api-base", "http://127.0.0.1:9/v1",
                      "--model", "m", "--replay", str(recorded), "--temperature", "0.9")
    result.assert_outcomes(passed=2)
    s = toy_summary(run_eval.out)
    assert (s["n"], s["score"], s["selection"]["replay"]) == (6, 1.0, str(recorded))
    assert s["sampling"]["temperature"] == 0.0  # the recording's sampling: it made the completions
    rows = read_jsonl(run_eval.out / "toy" / "m" / "rows.jsonl")
    assert all(r["metadata"]["replayed_from"] and r["messages"][-1]["role"] == "assistant" for r in rows)


def test_a_registered_backend_is_prepared_once_by_the_xdist_controller(pytester, run_eval) -> None:
    """`--backend NAME` for a backend a conftest registers; its server starts in the controller, the
    workers get its URL, requests to it hold one cross-process slot, and it is closed at the end."""
    pytester.makepyfile(test_toy=TOY)
    pytester.makeconftest('''
        import json, os
        from pathlib import Path
        from metis_pytest.backends import register_backend
        from metis_pytest.backends.base import BaseBackend, ModelTarget, Runtime

        @register_backend("fake")
        class Fake(BaseBackend):
            name = "fake"

            def resolve(self, model, config):
                return ModelTarget(label=model, backend="fake", litellm_model="openai/shared",
                                   served_model="shared", max_concurrency=1)

            def needs_prepare(self, target):
                return True

            def prepare(self, target, ctx):
                from metis_pytest.testing import ScriptedServer
                server = ScriptedServer(default=lambda body: body["messages"][-1]["content"].rsplit(" ", 1)[-1],
                                        latency=0.05).start()
                with open("prepared.log", "a") as fh:
                    fh.write(f"{os.getpid()}\\n")
                return Runtime(api_base=server.base_url, slot_lock=str(ctx.state_dir / "slot.lock"), handle=server)

            def close(self, runtime):
                Path("closed.json").write_text(json.dumps({"pid": os.getpid(), "peak": runtime.handle.peak_in_flight,
                                                           "requests": runtime.handle.request_count}))
                runtime.handle.stop()
    ''')
    result = run_eval("test_toy.py", "-n", "2", "--backend", "fake", "--model", "a", "--concurrency", "4")
    result.assert_outcomes(passed=2)  # the food and gaming items, one per worker
    prepared = (pytester.path / "prepared.log").read_text().split()
    closed = json.loads((pytester.path / "closed.json").read_text())
    assert len(prepared) == 1 and closed["pid"] == int(prepared[0])  # one server, owned by the controller
    assert closed["requests"] == 6 and closed["peak"] == 1  # two workers, one request in flight at a time
    s = json.loads((run_eval.out / "toy" / "a" / "summary.json").read_text())
    assert (s["n"], s["score"], sorted(s["workers"])) == (6, 1.0, ["gw0", "gw1"])


JUDGED = '''
from eval_protocol.models import EvaluationRow
from pydantic import BaseModel
from metis_pytest.ep import evaluation_test, judge_target, last_assistant_text
from metis_pytest.judge import JudgeClient, JudgePrompt
from metis_pytest.registry import Benchmark, ScoreResult
from test_toy import load

class Verdict(BaseModel):
    correct: bool

PROMPT = JudgePrompt(name="toy-judge", version="j1", system="Grade.", user="Answer: $answer Gold: $gold")

def score(completion, ground_truth, metadata):
    raise NotImplementedError("judged: see the row function")

JUDGED = Benchmark(name="judged", version="1.0", primary_metric="judge", default_source="builtin", load=load,
                   dataset_id=lambda spec: "toy", dataset_revision=lambda spec: "r1", score=score,
                   judge_prompt_version=PROMPT.version)

@evaluation_test(JUDGED)
async def test_judged(row: EvaluationRow) -> EvaluationRow:
    async with JudgeClient(judge_target(JUDGED)) as judge:
        verdict = await judge.judge(PROMPT, {"answer": last_assistant_text(row), "gold": str(row.ground_truth)},
                                    Verdict)
    ok = float(verdict.valid and verdict.data.correct)
    row.evaluation_result = ScoreResult(score=ok, metrics={"judge": ok}, valid=verdict.valid,
                                        retryable=verdict.retryable, details={"judge": verdict.record()},
                                        reason=verdict.error or "").to_evaluate_result()
    return row
'''


def test_the_judge_is_a_second_target_recorded_with_every_score(pytester, run_eval, scripted_llm_factory) -> None:
    pytester.makepyfile(test_toy=TOY, test_judged=JUDGED)
    policy = scripted_llm_factory(default=answer)
    judge = scripted_llm_factory(default='{"correct": true}')
    args = ("test_judged.py", "--backend", "openai", "--api-base", policy.base_url, "--model", "m")
    run_eval(*args, "-rs").stdout.fnmatch_lines(["*a judged benchmark: pass --judge-model*"])
    result = run_eval(*args, "--judge-model", "judgey", "--judge-backend", "openai",
                      "--judge-api-base", judge.base_url)
    result.assert_outcomes(passed=1)
    assert policy.request_count == 6 and judge.request_count == 6
    assert all(r.body["model"] == "m" for r in policy.requests)
    assert all(r.body["model"] == "judgey" for r in judge.requests)
    s = json.loads((run_eval.out / "judged" / "m" / "summary.json").read_text())
    assert s["judge"] == {"model": "openai/judgey", "prompt_version": "j1"} and s["score"] == 1.0
    rows = read_jsonl(run_eval.out / "judged" / "m" / "rows.jsonl")
    assert all(r["details"]["judge"]["judge_model"] == "openai/judgey"
               and r["details"]["judge"]["prompt_version"] == "j1" for r in rows)
