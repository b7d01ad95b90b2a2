"""GSM8K (Cobbe et al. 2021, arXiv:2110.14168): grade-school math word problems.

Modules: ``scoring`` (pure scorer), ``prompts`` (system prompt), ``dataset`` (loaders).
Run with ``pytest evals/gsm8k --model ...``.
"""
