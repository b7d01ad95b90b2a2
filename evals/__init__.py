"""Metis evals: one package per benchmark (pytest evals, verl rewards and Eval Protocol share each scorer)."""
