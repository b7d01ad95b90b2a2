"""DPO implicit rewards from token logprobs: ``r(x, y) = beta * (logp_adapter(y|x) - logp_base(y|x))``.

A DPO-trained LoRA adapter is an implicit reward model (Rafailov et al. 2023, arXiv:2305.18290); MODPO
(Zhou et al. 2024, arXiv:2310.03708) uses one as its margin. ``logp(y|x)`` is the sum of the log
probabilities of the *response* tokens given the prompt: prompt tokens are masked, and the EOS token
is part of the response, as in MODPO's DPO tokenization (the response is followed by ``eos_token``).

**Where the logprobs come from.** Any OpenAI-compatible server whose ``/v1/completions`` returns
*prompt*-token logprobs for ``echo: true`` with ``logprobs`` set. Each text is sent once with
``{"echo": true, "logprobs": 1, "max_tokens": 1, "temperature": 0}``; the generated token is dropped
(``usage.completion_tokens`` of them, from the end):

- **vLLM**: yes; serve the adapter under its own name beside the base
  (``vllm serve BASE --enable-lora --lora-modules margin=PATH``), then ``adapter=margin``,
  ``base=BASE`` on one URL. (vLLM's ``prompt_logprobs`` extra parameter is the same data.)
- **llama-cpp-python's server** (``python -m llama_cpp.server``, what ``--local-model`` runs): yes, it
  implements ``echo`` with ``logprobs`` (``Llama._create_completion``) when the model was loaded with
  ``logits_all`` (the server's default). Serve the base and the LoRA GGUF (``--lora_path``) as two
  models of a ``--config_file``. In llama-cpp-python 0.3.36 the echoed logprobs are shifted by one
  token when the GGUF does not add a BOS token (SmolLM2, Qwen); start the prompt template with the
  model's BOS text (``<|im_start|>`` for SmolLM2) and they match the generation logprobs.
- **OpenAI's API**: no (its completions models refuse ``echo`` with ``logprobs``); a server that
  returns no prompt logprobs gives :class:`LogprobsUnsupported`.

**Prompt masking is by tokens, not by text offsets** (servers disagree on ``text_offset``: vLLM sums
decoded token lengths, BOS included; llama-cpp-python renders special tokens as ""). The prompt is
echoed alone as well (once per model and prompt, cached); the response tokens are those after the
longest common prefix of the two echoed token lists, so a token that merges the end of the prompt with
the start of the response counts as response. The adapter and the base must split the response into the
same number of tokens, or :class:`ImplicitRewardError` is raised (two tokenizers: ``r`` means nothing).

**MARGIN_BETA's sign** (MODPO's margin wrapper returns ``r`` with ``beta = MARGIN_BETA`` and MODPO
*subtracts* the margin term inside its ``R``): ``MARGIN_BETA > 0`` enters ``R`` as a **cost**,
``MARGIN_BETA < 0`` as a **reward**; see :func:`margin_role`. What that does to the trained policy is the
opposite of what the word suggests: MODPO's loss is minimised where ``beta * log(pi / pi_sft) =
w0 * r_preference + w1 * r_margin`` (the paper's Eq. 7), so with ``MARGIN_BETA > 0`` the policy is pulled
*toward* what the adapter prefers (weight ``1 - w``), and a negative one pushes it away
(``metis_pytest/train/modpo/loss.py`` derives it and its tests show it).
The margin sanity check measures the adapter's own preference and therefore takes ``beta > 0``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from metis_pytest.backends.base import ModelTarget
from metis_pytest.rollout.http import RequestFailed, RetryPolicy, post_json, retried

__all__ = [
    "MODPO_PROMPT_TEMPLATE",
    "EchoedTokens",
    "ImplicitReward",
    "ImplicitRewardError",
    "ImplicitRewardModel",
    "LogprobsUnsupported",
    "ResponseLogprob",
    "echo_logprobs",
    "implicit_reward",
    "margin_role",
    "response_logprob",
]

# The Human/Assistant template of MODPO's recipes (Anthropic HH style); it must be what the adapter was
# trained on, so it is an option (--helpsteer-prompt-template).
MODPO_PROMPT_TEMPLATE = "\n\nHuman:\n{raw_prompt}\n\nAssistant:\n"  # the reference code's (ZHZisZZ/modpo)


class ImplicitRewardError(ValueError):
    """The logprobs cannot give an implicit reward (no response token, mismatched tokenizations)."""


class LogprobsUnsupported(RequestFailed):
    """The server answered but sent no prompt-token logprobs for ``echo`` + ``logprobs``: not retryable."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False, status=200)


def implicit_reward(logp_adapter: float, logp_base: float, beta: float) -> float:
    """``beta * (logp_adapter - logp_base)``; any sign of ``beta`` (see the module docstring)."""
    return beta * (logp_adapter - logp_base)


def margin_role(margin_beta: float) -> str:
    """How this MARGIN_BETA's margin term enters MODPO's ``R``: ``"cost"`` (> 0: subtracted, which pulls
    the policy toward the adapter's preference, see the module docstring), ``"reward"`` (< 0); ``0`` is
    refused (no margin at all)."""
    if margin_beta > 0:
        return "cost"
    if margin_beta < 0:
        return "reward"
    raise ValueError("MARGIN_BETA = 0 leaves no margin term")


@dataclass(frozen=True)
class EchoedTokens:
    """The echoed tokens of one text and the logprob of each given the ones before (``None``: the first)."""

    tokens: tuple[str, ...]
    logprobs: tuple[float | None, ...]


@dataclass(frozen=True)
class ResponseLogprob:
    """``logp(y|x)``: the sum over the response tokens (EOS included when it was appended)."""

    total: float
    tokens: tuple[str, ...]

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True)
class ImplicitReward:
    """``reward = beta * (logp_adapter - logp_base)`` with its parts."""

    reward: float
    logp_adapter: float
    logp_base: float
    n_tokens: int
    beta: float


def parse_echo(body: Any, where: str) -> EchoedTokens:
    """The echoed tokens of a ``text_completion`` body; the ``usage.completion_tokens`` generated ones
    are dropped from the end. :class:`LogprobsUnsupported` when there are no logprobs in it."""
    try:
        choice = body["choices"][0]
    except (KeyError, IndexError, TypeError):
        raise RequestFailed(f"{where}: malformed completion (no choices[0]): {json.dumps(body)[:200]}",
                            retryable=True, status=200) from None
    logprobs = choice.get("logprobs") if isinstance(choice, dict) else None
    tokens = logprobs.get("tokens") if isinstance(logprobs, dict) else None
    values = logprobs.get("token_logprobs") if isinstance(logprobs, dict) else None
    if not isinstance(tokens, list) or not isinstance(values, list) or len(tokens) != len(values) or not tokens:
        raise LogprobsUnsupported(f"{where}: the server returned no prompt-token logprobs for echo+logprobs "
                                  "(it does not support them: see evals/helpsteer/implicit.py)")
    usage = body.get("usage") if isinstance(body, dict) else None
    generated = int(usage.get("completion_tokens") or 0) if isinstance(usage, dict) else 0
    keep = len(tokens) - min(generated, len(tokens))
    return EchoedTokens(tuple(str(t) for t in tokens[:keep]),
                        tuple(None if v is None else float(v) for v in values[:keep]))


async def echo_logprobs(http: aiohttp.ClientSession, target: ModelTarget, text: str,
                        policy: RetryPolicy) -> EchoedTokens:
    """Prompt-token logprobs of ``text`` from ``target``'s ``/completions``, retried as the rollout
    transport retries (HTTP 408/409/425/429/5xx, timeouts, broken connections; ``Retry-After``)."""
    payload = {"model": target.request_model, "prompt": text, "echo": True, "logprobs": 1, "max_tokens": 1,
               "temperature": 0}
    where = f"{target.request_model} at {URL(target.api_base or '').origin()}"

    async def once() -> EchoedTokens:
        return parse_echo(await post_json(http, target, "completions", payload, policy.timeout), where)

    echoed, _ = await retried(policy, once)
    return echoed


def response_logprob(prompt_only: EchoedTokens, full: EchoedTokens) -> ResponseLogprob:
    """``logp(y|x)`` from the echo of the prompt alone and of prompt + response: the tokens of ``full``
    after the longest common prefix with ``prompt_only`` (at most all of its tokens) are the response's."""
    boundary = 0
    for a, b in zip(prompt_only.tokens, full.tokens):
        if a != b:
            break
        boundary += 1
    tokens = full.tokens[boundary:]
    values = full.logprobs[boundary:]
    if not tokens:
        raise ImplicitRewardError("the response has no token of its own (empty response and no EOS token)")
    if any(v is None for v in values):
        raise ImplicitRewardError("the server gave no logprob for a response token")
    return ResponseLogprob(total=sum(v for v in values if v is not None), tokens=tokens)


class ImplicitRewardModel:
    """``r(x, y)`` from an adapter target and a base target (any OpenAI-compatible servers, see above).

    Args:
        adapter, base: Where each model is served (``ModelTarget.request_model`` is the name sent).
        beta: The DPO beta (or MARGIN_BETA, any sign) that scales the log-ratio.
        prompt_template: ``str.format`` template with ``{raw_prompt}`` (:data:`MODPO_PROMPT_TEMPLATE` by
            default); it must be what the adapter was trained on.
        eos_token: Text appended to every response: the model's EOS token as text (``</s>``), which vLLM
            and llama-cpp-python parse as the special token; ``""`` leaves EOS out.
        policy: Retries per request; ``concurrency``: requests in flight at once.
    """

    def __init__(self, adapter: ModelTarget, base: ModelTarget, *, beta: float,
                 prompt_template: str = MODPO_PROMPT_TEMPLATE, eos_token: str = "",
                 policy: RetryPolicy | None = None, concurrency: int = 4) -> None:
        if "{raw_prompt}" not in prompt_template:
            raise ValueError("prompt_template must contain {raw_prompt}")
        self.adapter, self.base, self.beta = adapter, base, beta
        self.prompt_template, self.eos_token = prompt_template, eos_token
        self.policy = policy or RetryPolicy()
        self.concurrency = concurrency
        self._http: aiohttp.ClientSession | None = None
        self._slots: asyncio.Semaphore | None = None
        self._prompts: dict[tuple[str, str | None, str], asyncio.Task[EchoedTokens]] = {}

    def prompt_text(self, prompt: str) -> str:
        return self.prompt_template.format(raw_prompt=prompt)

    async def _echo(self, target: ModelTarget, text: str) -> EchoedTokens:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession()
            self._slots = asyncio.Semaphore(self.concurrency)
        assert self._slots is not None
        async with self._slots:
            return await echo_logprobs(self._http, target, text, self.policy)

    async def logprob(self, target: ModelTarget, prompt: str, response: str) -> ResponseLogprob:
        """``logp(response + eos | prompt)`` under ``target``; the prompt's echo is asked once per model."""
        text = self.prompt_text(prompt)
        key = (target.request_model, target.api_base, text)
        task = self._prompts.get(key)
        if task is None or (task.done() and task.exception() is not None):
            task = asyncio.ensure_future(self._echo(target, text))
            self._prompts[key] = task
        full = await self._echo(target, text + response + self.eos_token)
        return response_logprob(await task, full)

    async def score(self, prompt: str, response: str) -> ImplicitReward:
        """The implicit reward of ``response`` to ``prompt``."""
        adapter, base = await asyncio.gather(self.logprob(self.adapter, prompt, response),
                                             self.logprob(self.base, prompt, response))
        if adapter.n_tokens != base.n_tokens:
            raise ImplicitRewardError(f"the adapter and the base split the response into {adapter.n_tokens} and "
                                      f"{base.n_tokens} tokens: they do not share a tokenizer")
        return ImplicitReward(reward=implicit_reward(adapter.total, base.total, self.beta),
                              logp_adapter=adapter.total, logp_base=base.total, n_tokens=adapter.n_tokens,
                              beta=self.beta)

    async def aclose(self) -> None:
        if self._http is not None and not self._http.closed:
            await self._http.close()
        self._prompts.clear()

    async def __aenter__(self) -> ImplicitRewardModel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

