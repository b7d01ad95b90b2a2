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
    monkeypatch.setenv("PATH", str(marked.path / "empty-bin"))  # no nvidia-smi
    result = marked.runpytest("-rs", "--strict-markers")
    result.assert_outcomes(skipped=3)
    result.stdout.fnmatch_lines_random([
        "*needs METIS_TEST_NEEDED_KEY (not set in the environment)*",
        "*needs a GPU: no nvidia-smi on PATH (pass --gpu to force)*",
        "*needs the network: pass --allow-network*",
    ])
    assert "METIS_TEST_OTHER_KEY" not in result.stdout.str()


def test_they_run_when_the_need_is_met(marked: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METIS_TEST_NEEDED_KEY", "x")
    monkeypatch.setenv("METIS_TEST_OTHER_KEY", "y")
    monkeypatch.setenv("PATH", str(marked.path / "empty-bin"))  # --gpu, not nvidia-smi, lets test_gpu run
    marked.runpytest("--allow-network", "--gpu", "--strict-markers").assert_outcomes(passed=3)


def test_gpu_marker_ignores_the_old_environment_variable(marked: pytest.Pytester,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(marked.path / "empty-bin"))
    monkeypatch.setenv("METIS_GPU", "1")  # configuration no longer goes through the environment
    result = marked.runpytest("-v", "-rs")
    result.stdout.fnmatch_lines(["*::test_gpu SKIPPED*", "*needs a GPU: no nvidia-smi on PATH (pass --gpu to force)*"])


@pytest.mark.parametrize(("ini", "test"), [("metis_allow_network", "test_network"), ("metis_gpu", "test_gpu")])
def test_ini_twins_of_the_flags(marked: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ini: str,
                                test: str) -> None:
    monkeypatch.delenv("METIS_TEST_NEEDED_KEY", raising=False)
    monkeypatch.setenv("PATH", str(marked.path / "empty-bin"))
    marked.makeini(f"[pytest]\n{ini} = true\n")
    result = marked.runpytest("-v")
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines([f"*::{test} PASSED*"])
