"""The gate options: parsing, defaults, the optional PATH, ini twins, and bad values refused up front."""

from __future__ import annotations

import pytest

from metis_pytest import session as metis_session


def _cfg(pytester: pytest.Pytester, *args: str):
    config = pytester.parseconfigure(*args)
    try:
        return config.pluginmanager.get_plugin(metis_session.PLUGIN_NAME).cfg
    finally:
        config._ensure_unconfigure()


def test_defaults_compare_nothing_and_save_nothing(pytester: pytest.Pytester) -> None:
    cfg = _cfg(pytester)
    assert (cfg.compare, cfg.compare_path, cfg.compare_fail, cfg.save_baseline, cfg.compare_force) == (
        False, None, (), False, False)
    assert cfg.baseline_dir == pytester.path / "baselines"  # the rootdir's


def test_compare_with_and_without_a_path(pytester: pytest.Pytester) -> None:
    (pytester.path / "mine" / "gsm8k").mkdir(parents=True)
    assert (_cfg(pytester, "--metis-compare").compare, _cfg(pytester, "--metis-compare").compare_path) == (True, None)
    cfg = _cfg(pytester, "--metis-compare=mine")
    assert cfg.compare and cfg.compare_path == pytester.path / "mine"
    assert _cfg(pytester, "--metis-compare", "mine").compare_path == pytester.path / "mine"  # a bare path too
    cfg = _cfg(pytester, "--metis-compare-fail", "score:-2pp,score:p<0.05", "--metis-compare-fail", "x:0pp")
    assert cfg.compare and cfg.compare_fail == ("score:-2pp", "score:p<0.05", "x:0pp")  # rules imply a comparison


def test_ini_twins(pytester: pytest.Pytester) -> None:
    (pytester.path / "elsewhere").mkdir()
    pytester.makeini("[pytest]\nmetis_baseline_dir = elsewhere\nmetis_compare_fail =\n    score:-1pp\n"
                     "metis_save_baseline = true\n")
    cfg = _cfg(pytester)
    assert cfg.baseline_dir == pytester.path / "elsewhere" and cfg.compare_fail == ("score:-1pp",)
    assert cfg.save_baseline and cfg.compare


@pytest.mark.parametrize(("args", "message"), [
    (["--metis-compare-fail", "score:-2%"], "--metis-compare-fail 'score:-2%': unknown rule '-2%'*"),
    (["--metis-compare-fail", "score"], "--metis-compare-fail 'score': expected METRIC:RULE*"),
    (["--metis-compare=nowhere"], "--metis-compare */nowhere: no such baseline file or folder*"),
])
def test_bad_gate_options_are_usage_errors(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}"])
