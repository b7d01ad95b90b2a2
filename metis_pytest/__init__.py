"""Metis: a pytest-plugin evaluation harness for LLM post-training.

The plugin (``metis_pytest.plugin``) is loaded by pytest through the ``pytest11`` entry point.
Importing this package is cheap on purpose: LiteLLM, Eval Protocol and aiohttp are imported only
by the modules that need them, when an evaluation actually runs.
"""

__version__ = "0.1.0"
