"""Root conftest: only what every evaluation shares and cannot live in the plugin.

Its presence makes pytest put the repository root on ``sys.path`` (rootdir conftest, prepend import
mode), so ``evals.<bench>.scoring`` is importable from every evaluation and test. The Metis plugin
itself is loaded through its ``pytest11`` entry point (``pip install -e .``).
"""
