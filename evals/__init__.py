"""Metis evals: one package per benchmark (pytest evals, verl rewards and Eval Protocol share each scorer).

The name ``evals`` is also taken by another distribution on PyPI (OpenAI's ``evals``). Installing both
in one environment makes one shadow the other; the registry checks ``__metis__`` below and says so
instead of failing with a confusing import error. See the README ("Why the package is called evals").
"""

__metis__ = True
