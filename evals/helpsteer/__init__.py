"""HelpSteer (nvidia/HelpSteer, HelpSteer2): multi-objective evaluation of MODPO policies.

Modules: ``dataset`` (loaders, MODPO's preference pairs), ``implicit`` (DPO implicit rewards from token
logprobs), ``judge`` (the five-attribute LLM judge), ``armorm`` (ArmoRM's HelpSteer heads, GPU, optional),
``scoring`` (pure scorers and length statistics), ``pareto`` (policies over the w-grid: comparison table
and Pareto front), ``calibration`` (the judge against the human ratings), ``benchmark`` (registry entries).
Run with ``pytest evals/helpsteer --model ...`` (see README.md).
"""
