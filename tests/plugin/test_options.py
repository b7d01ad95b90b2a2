"""Options and their ini twins, parsed into one MetisConfig (in-process pytester)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from metis_pytest import session as metis_session


@pytest.fixture(autouse=True)
def _restore_environment():
    """Eval Protocol's plugin writes its flags into os.environ (--ep-num-runs -> EP_NUM_RUNS); an
    in-process pytester run would leave them behind for the next test."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def _cfg(pytester: pytest.Pytester, *args: str):
    config = pytester.parseconfigure(*args)
    try:
        return config.pluginmanager.get_plugin(metis_session.PLUGIN_NAME).cfg
    finally:
        config._ensure_unconfigure()


def test_defaults(pytester: pytest.Pytester) -> None:
    cfg = _cfg(pytester)
    assert cfg.models == ("local",)
    assert cfg.runs == 1 and cfg.concurrency == 8 and cfg.max_rows is None
    assert cfg.temperature == 0.0 and cfg.max_tokens == 512
    assert cfg.output_dir == Path(pytester.path) / "runs"
    assert cfg.ep_upload is False


def test_model_is_repeatable_and_takes_comma_lists(pytester: pytest.Pytester) -> None:
    cfg = _cfg(pytester, "--model", "openai/gpt-4o-mini,local", "--model", "anthropic/claude-x")
    assert cfg.models == ("openai/gpt-4o-mini", "local", "anthropic/claude-x")


def test_ini_twins_and_command_line_wins(pytester: pytest.Pytester) -> None:
    pytester.makeini("""
        [pytest]
        metis_model =
            openai/gpt-4o-mini
            local
        metis_runs = 3
        metis_concurrency = 16
        metis_output_dir = out
        metis_temperature = 0.7
    """)
    cfg = _cfg(pytester, "--runs", "2")
    assert cfg.models == ("openai/gpt-4o-mini", "local")
    assert cfg.runs == 2
    assert cfg.concurrency == 16
    assert cfg.temperature == 0.7
    assert cfg.output_dir == Path(pytester.path) / "out"


@pytest.mark.parametrize("args, message", [
    (["--runs", "0"], "--runs must be at least 1"),
    (["--max-rows", "-1"], "--max-rows must be at least 1"),
    (["--max-error-rate", "2"], "--max-error-rate must be between 0 and 1"),
    (["--concurrency", "lots"], "expected a number"),
    (["--api-base", "notaurl"], "--api-base 'notaurl': expected an http:// or https:// URL with a host"),
    (["--api-base", "ftp://127.0.0.1/v1"], "expected an http:// or https:// URL"),
    (["--api-base", "http://127.0.0.1:8000/v1?key=1"], "a base URL takes no query string or fragment"),
    (["--judge-api-base", "http://h/v1#x"], "--judge-api-base * takes no query string or fragment"),
    (["--api-base", "http://127.0.0.1:99999/v1"], "--api-base * not a valid URL"),
    (["--request-timeout", "0"], "--request-timeout must be more than 0 seconds, got 0"),
    (["--request-timeout", "-5"], "--request-timeout must be more than 0 seconds, got -5"),
    (["--temperature", "nan"], "--temperature / metis_temperature: expected a finite number, got 'nan'"),
    (["--temperature", "inf"], "expected a finite number, got 'inf'"),
    (["--temperature", "-1"], "--temperature must be 0 or more"),
    (["--backend", "nosuch"], "--backend 'nosuch': not a registered backend; known: api, local, modal, openai"),
    (["--ep-num-runs", "3"], "--ep-num-runs is Eval Protocol's and would override Metis silently; use --runs"),
    (["--ep-max-rows", "2"], "--ep-max-rows is Eval Protocol's * use --max-rows"),
    (["--ep-max-concurrent-rollouts", "4"], "* use --concurrency"),
    (["--ep-input-param", "temperature=1"], "* use --temperature / --max-tokens"),
    (["--resume", "--replay", "."], "--resume and --replay exclude each other*"),
    (["--replay", "no-such-dir"], "--replay * not a folder of recorded runs"),
])
def test_bad_values_are_usage_errors(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])


def test_options_are_in_one_group_in_help(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*Metis evaluation harness*", "*--model*", "*--backend*", "*--judge-model*",
                                 "*--runs*", "*--max-rows*", "*--concurrency*", "*--output-dir*",
                                 "*--temperature*", "*--max-tokens*", "*metis_model*"])


def test_backend_choice(pytester: pytest.Pytester) -> None:
    from metis_pytest.backends import choose_backend

    cfg = _cfg(pytester)
    assert choose_backend("local", cfg) == "local"
    assert choose_backend("openai/gpt-4o-mini", cfg) == "api"
    cfg = _cfg(pytester, "--api-base", "http://127.0.0.1:9/v1")
    assert choose_backend("Qwen/Qwen2.5-7B", cfg) == "openai"


def test_eval_protocol_variables_in_the_environment_are_refused(pytester: pytest.Pytester,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EP_NUM_RUNS", "3")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*EP_NUM_RUNS is set in the environment*unset it and use --runs*"])


def test_an_unwritable_output_dir_is_refused_before_anything_runs(pytester: pytest.Pytester) -> None:
    blocker = pytester.path / "file"
    blocker.write_text("")  # a file where a folder must go: not writable as a folder, even for root
    result = pytester.runpytest("--output-dir", str(blocker / "runs"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--output-dir {blocker / 'runs'}: not writable*"])


def test_uploads_stay_off_through_eval_protocols_own_switch(pytester: pytest.Pytester,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Metis never writes EP_NO_UPLOAD itself: it turns on Eval Protocol's --ep-no-upload, which does."""
    monkeypatch.delenv("EP_NO_UPLOAD", raising=False)
    pytester.makepyfile(test_env="""
        import os
        def test_upload_switch(request):
            expected = None if request.config.getoption("metis_ep_upload") else "1"
            assert os.environ.get("EP_NO_UPLOAD") == expected
    """)
    pytester.runpytest("test_env.py").assert_outcomes(passed=1)
    os.environ.pop("EP_NO_UPLOAD", None)
    pytester.runpytest("test_env.py", "--ep-upload").assert_outcomes(passed=1)


def test_the_judge_is_resolved_on_its_own(pytester: pytest.Pytester) -> None:
    config = pytester.parseconfigure("--api-base", "http://127.0.0.1:9/v1", "--model", "policy",
                                     "--judge-model", "openai/gpt-4o")
    try:
        from evals.gsm8k.benchmark import BENCHMARK

        session = config.pluginmanager.get_plugin(metis_session.PLUGIN_NAME)
        judge = session.judge_target(BENCHMARK)
        assert judge.backend == "api" and judge.api_base == "https://api.openai.com/v1"  # not the policy's URL
        assert session.target("policy").api_base == "http://127.0.0.1:9/v1"
        assert session.judge_identity(BENCHMARK) == {"model": "openai/gpt-4o"}
    finally:
        config._ensure_unconfigure()


def test_dataset_split_and_revision_reach_the_loader(pytester: pytest.Pytester) -> None:
    from evals.gsm8k.benchmark import BENCHMARK

    config = pytester.parseconfigure("--dataset", "hf", "--dataset-split", "train", "--dataset-revision", "abc123")
    try:
        session = config.pluginmanager.get_plugin(metis_session.PLUGIN_NAME)
        spec = session.data_spec(BENCHMARK)
        assert (spec.source, spec.split, spec.revision) == ("hf", "train", "abc123")
    finally:
        config._ensure_unconfigure()
