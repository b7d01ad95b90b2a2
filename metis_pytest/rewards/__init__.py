"""Reward functions for RL trainers, backed by the benchmark registry (the scorer the pytest evaluation runs).

``metis_pytest.rewards.verl``: verl's custom reward function, ``compute_score`` (and
``compute_score_async`` for judged benchmarks); point ``reward.custom_reward_function.path`` at that
file. Importing this package imports neither verl, torch nor Eval Protocol.
"""

from metis_pytest.rewards.verl import compute_score, compute_score_async

__all__ = ["compute_score", "compute_score_async"]
