"""metis_pytest.lazy_imports: LiteLLM is not run until used, and works unchanged once it is."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from metis_pytest import lazy_imports


@pytest.fixture
def pkgdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A package whose import is slow and observable: it counts its runs in a file."""
    pkg = tmp_path / "slowpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        import pathlib, time
        _runs = pathlib.Path(__file__).with_name("runs.txt")
        _runs.write_text(_runs.read_text() + "x" if _runs.exists() else "x")
        time.sleep(0.2)
        flag = False
        def answer():
            return 42
        from slowpkg.sub import VALUE
    """))
    (pkg / "sub.py").write_text("import slowpkg\nVALUE = 'sub'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield pkg
    for name in [n for n in sys.modules if n == "slowpkg" or n.startswith("slowpkg.")]:
        del sys.modules[name]


def _runs(pkg: Path) -> int:
    f = pkg / "runs.txt"
    return len(f.read_text()) if f.exists() else 0


def test_import_runs_nothing_until_an_attribute_is_read_and_preset_attributes_are_kept(pkgdir) -> None:
    assert lazy_imports.defer("slowpkg") is True
    import slowpkg

    slowpkg.flag = True  # what Eval Protocol does to litellm on import
    assert _runs(pkgdir) == 0 and not lazy_imports.is_loaded("slowpkg")
    assert slowpkg.answer() == 42 and slowpkg.VALUE == "sub"
    assert slowpkg.flag is True  # set before the load, kept after it
    assert _runs(pkgdir) == 1 and lazy_imports.is_loaded("slowpkg") and type(slowpkg) is type(sys)
    from slowpkg import answer  # noqa: F401

    assert _runs(pkgdir) == 1


def test_importing_a_submodule_first_loads_the_package_first(pkgdir) -> None:
    lazy_imports.defer("slowpkg")
    from slowpkg.sub import VALUE

    assert VALUE == "sub" and lazy_imports.is_loaded("slowpkg") and _runs(pkgdir) == 1


def test_threads_reading_at_once_load_it_once_and_all_see_it(pkgdir) -> None:
    lazy_imports.defer("slowpkg")
    import slowpkg

    seen: list[int] = []
    threads = [threading.Thread(target=lambda: seen.append(slowpkg.answer())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen == [42] * 8 and _runs(pkgdir) == 1


def test_an_imported_or_absent_module_is_left_alone(pkgdir) -> None:
    import slowpkg  # noqa: F401  (imported for real first)

    assert lazy_imports.defer("slowpkg") is False and lazy_imports.is_loaded("slowpkg")
    assert lazy_imports.defer("no_such_module_metis") is False and "no_such_module_metis" not in sys.modules


def test_a_package_deferred_submodules_first_imports_them_without_its_init(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Eval Protocol's case: a submodule imports without the package's ``__init__``; the ``__init__``'s own
    names win over the submodules imported meanwhile (``tool`` the function, not the module ``tool``), and
    a class it gives the package itself (Eval Protocol's ``__version__`` property) stays."""
    pkg = tmp_path / "shadowpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        import pathlib, sys
        pathlib.Path(__file__).with_name("ran.txt").write_text("ran")
        from shadowpkg.tool import tool
        _me = sys.modules[__name__]
        _me.__class__ = type("module", (type(_me),), {"version": property(lambda self: "1.2")})
    """))
    (pkg / "tool.py").write_text("def tool():\n    return 'the function'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert lazy_imports.defer("shadowpkg", submodules_first=True) is True
        import shadowpkg.tool

        assert not (pkg / "ran.txt").exists() and not lazy_imports.is_loaded("shadowpkg")
        assert shadowpkg.version == "1.2"  # a name it does not hold: its __init__ runs now
        assert (pkg / "ran.txt").exists() and lazy_imports.is_loaded("shadowpkg")
        assert shadowpkg.tool() == "the function"
        with pytest.raises(AttributeError):
            shadowpkg.nothing_here  # noqa: B018
    finally:
        for name in [n for n in sys.modules if n == "shadowpkg" or n.startswith("shadowpkg.")]:
            del sys.modules[name]


SCRIPT = """
import metis_pytest.lazy_imports as lz
import eval_protocol.pytest, metis_pytest.ep
from eval_protocol.models import EvaluationRow
assert not lz.is_loaded("litellm"), "Eval Protocol's import ran LiteLLM"
assert not lz.is_loaded("eval_protocol"), "importing its submodules ran Eval Protocol's __init__"
import litellm
assert litellm.disable_add_transform_inline_image_block is True   # Eval Protocol's __init__ ran first
assert lz.is_loaded("eval_protocol") and eval_protocol.__version__
from litellm import get_optional_params
assert callable(litellm.acompletion) and lz.is_loaded("litellm")
print("ok")
"""


def test_eval_protocol_imports_without_running_litellm_and_litellm_works_when_used() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120,
                         env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


def test_as_a_pytest_plugin_it_loads_before_eval_protocols(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_trivial="""
        from metis_pytest.lazy_imports import is_loaded

        def test_nothing_ran_litellm_or_eval_protocols_init():
            import eval_protocol  # Eval Protocol's auto-loaded plugin imported it already
            assert not is_loaded("litellm") and not is_loaded("eval_protocol")
    """)
    result = pytester.runpytest_subprocess("-p", "metis_pytest.lazy_imports", "-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=1)


def test_loading_now_runs_it_once(pkgdir) -> None:
    lazy_imports.defer("slowpkg")
    assert lazy_imports.load_now("slowpkg") is True
    assert _runs(pkgdir) == 1 and lazy_imports.is_loaded("slowpkg")
    assert lazy_imports.load_now("slowpkg") is False


def test_a_process_without_evaluations_never_loads_litellm(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_trivial="""
        import time
        from metis_pytest.lazy_imports import is_loaded

        def test_nothing_loaded():
            time.sleep(0.5)
            assert not is_loaded("litellm")
    """)
    result = pytester.runpytest_subprocess("-p", "metis_pytest.lazy_imports", "-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=1)


REPO = Path(__file__).resolve().parents[2]


def _replay_args() -> list[str]:
    recorded = REPO / "baselines" / "gsm8k" / "recorded" / "scripted-mix"
    return ["-p", "metis_pytest.lazy_imports", "-p", "no:cacheprovider", "--replay", str(recorded),
            "--model", "scripted-mix", "--dataset", str(REPO / "datasets" / "gsm8k_smoke.jsonl"), "--output-dir", "out"]


def test_an_evaluation_on_the_metis_item_runner_never_loads_litellm_unless_a_rollout_uses_it(
        pytester: pytest.Pytester) -> None:
    """The replay, like the OpenAI wire, never calls LiteLLM: its process never runs LiteLLM's import."""
    pytester.makeconftest("""
        from metis_pytest.lazy_imports import is_loaded

        def pytest_runtest_setup(item):
            assert not is_loaded("litellm")

        def pytest_runtest_teardown(item):
            assert not is_loaded("litellm")
    """)
    pytester.makepyfile(test_eval="from evals.gsm8k.test_gsm8k import test_gsm8k  # noqa: F401\n")
    result = pytester.runpytest_subprocess(*_replay_args(), timeout=180)
    result.assert_outcomes(passed=1)


def test_an_evaluation_on_eval_protocols_wrapper_loads_litellm_before_its_first_item(pytester: pytest.Pytester) -> None:
    """An ``@evaluation_test`` given an Eval Protocol option the Metis runner does not implement runs Eval
    Protocol's wrapper, which imports LiteLLM in every item: loaded at collection, outside the item."""
    pytester.makeconftest("""
        from metis_pytest.lazy_imports import is_loaded

        def pytest_runtest_setup(item):
            assert is_loaded("litellm")
    """)
    pytester.makepyfile(test_eval="""
        from eval_protocol.models import EvaluationRow

        from evals.gsm8k.benchmark import BENCHMARK
        from metis_pytest.ep import evaluation_test, score_row

        @evaluation_test(BENCHMARK, max_concurrent_evaluations=4)
        def test_gsm8k_on_eps_wrapper(row: EvaluationRow) -> EvaluationRow:
            row.evaluation_result = score_row(BENCHMARK, row).to_evaluate_result()
            return row

        def test_it_is_eval_protocols_own_item():
            assert getattr(test_gsm8k_on_eps_wrapper, "__metis_runner__", None) is None
    """)
    result = pytester.runpytest_subprocess(*_replay_args(), timeout=180)
    result.assert_outcomes(passed=2)


def test_a_session_with_evaluation_items_freezes_what_it_collected_and_a_plain_one_does_not(
        pytester: pytest.Pytester) -> None:
    """The collector never walks the session's long-lived objects during an item (``gc.freeze``)."""
    pytester.makeconftest("""
        import gc

        def pytest_runtest_setup(item):
            frozen = gc.get_freeze_count() > 0
            assert frozen == (item.name != "test_plain"), (item.name, gc.get_freeze_count())
    """)
    pytester.makepyfile(test_eval="from evals.gsm8k.test_gsm8k import test_gsm8k  # noqa: F401\n",
                        test_plain="def test_plain():\n    pass\n")
    result = pytester.runpytest_subprocess(*_replay_args(), "test_eval.py", timeout=180)
    result.assert_outcomes(passed=1)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "test_plain.py", timeout=180)
    result.assert_outcomes(passed=1)
