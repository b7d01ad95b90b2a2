"""Options and their ini twins, parsed into one MetisConfig (in-process pytester)."""

from __future__ import annotations

from pathlib import Path

import pytest

from metis_pytest import session as metis_session


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
