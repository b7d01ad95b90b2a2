"""Markers for evaluations that need a key, a GPU or the network: skipped with a reason that names what is missing."""

from __future__ import annotations

import pytest


@pytest.fixture
def marked(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.metis_requires_env("METIS_TEST_NEEDED_KEY", "METIS_TEST_OTHER_KEY")
        def test_key():
            pass

        @pytest.mark.metis_gpu
        def test_gpu():
            pass

        @pytest.mark.metis_network
        def test_network():
            pass
    """)
    return pytester


def test_skips_name_the_missing_variable(marked: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("METIS_TEST_NEEDED_KEY", raising=False)
    monkeypatch.setenv("METIS_TEST_OTHER_KEY", "x")
    monkeypatch.delenv("METIS_GPU", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")  # no nvidia-smi
    result = marked.runpytest("-rs", "--strict-markers")
    result.assert_outcomes(skipped=3)
    result.stdout.fnmatch_lines_random([
        "*needs METIS_TEST_NEEDED_KEY (not set in the environment)*",
        "*needs a GPU: no nvidia-smi on PATH (set METIS_GPU=1 to force)*",
        "*needs the network: pass --allow-network*",
    ])
    assert "METIS_TEST_OTHER_KEY" not in result.stdout.str()


def test_they_run_when_the_need_is_met(marked: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METIS_TEST_NEEDED_KEY", "x")
    monkeypatch.setenv("METIS_TEST_OTHER_KEY", "y")
    monkeypatch.setenv("METIS_GPU", "1")
    marked.runpytest("--allow-network", "--strict-markers").assert_outcomes(passed=3)


def test_ini_twin_of_allow_network(marked: pytest.Pytester) -> None:
    marked.makeini("[pytest]\nmetis_allow_network = true\n")
    marked.runpytest("test_ini_twin_of_allow_network.py::test_network").assert_outcomes(passed=1)
