"""The real verl 0.9.1, opt-in (``tox -e verl``; verl and torch are several GB, so not in default CI).

Our parquet through verl's ``RLHFDataset``, a batch scored by verl's reward manager with our reward
function loaded the way verl loads it (``pkg://metis_pytest.rewards.verl``), our tools built by verl's
tool loader from ``ace_tools.yaml`` and called through ``ToolAgentLoop._call_tool``, and the GRPO Hydra
config (verl's ``ppo_trainer``) composed with our overrides. Every test is skipped when verl is absent.
No GPU, model or network is needed: the web is the ACE demo's recorded snapshot, the judge a scripted
server on loopback, the tokenizer a stand-in whose ``decode`` gives the completion.

Written against verl 0.9.1's sources (the PyPI wheel): ``verl/utils/dataset/rl_dataset.py``,
``verl/trainer/ppo/reward.py`` (``load_reward_manager``), ``verl/experimental/reward_loop/reward_manager/
naive.py``, ``verl/tools/tool_registry.py``, ``verl/experimental/agent_loop/tool_agent_loop.py``,
``verl/trainer/config/ppo_trainer.yaml``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from metis_pytest.export import export
from metis_pytest.rewards.verl import compute_score, compute_score_async
from metis_pytest.tools.toolbox import WebToolbox

REPO = Path(__file__).resolve().parents[2]
TOOLS_YAML = REPO / "metis_pytest" / "rewards" / "ace_tools.yaml"
DEMO = REPO / "datasets" / "ace_demo"
GSM8K_SMOKE = REPO / "datasets" / "gsm8k_smoke.jsonl"


def _verl() -> Any:
    return pytest.importorskip("verl")


def _shown_schemas() -> list[dict[str, Any]]:
    """The toolbox's schemas as verl shows them to the model (its pydantic schema keeps no additionalProperties)."""
    schemas = WebToolbox.__new__(WebToolbox).schemas()
    for schema in schemas:
        del schema["function"]["parameters"]["additionalProperties"]
    return schemas


def _rows(folder: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return [r for split in ("train", "test") for r in pq.read_table(folder / f"{split}.parquet").to_pylist()]


def grpo_config(*extra: str) -> Any:
    """verl's ``ppo_trainer`` config composed with the GRPO overrides for our data, reward and tools."""
    verl = _verl()
    from hydra import compose, initialize_config_dir

    overrides = [
        "algorithm.adv_estimator=grpo",
        "data.train_files=data/ace/train.parquet",
        "data.val_files=data/ace/test.parquet",
        "data.return_raw_chat=True",
        "actor_rollout_ref.model.path=Qwen/Qwen2-0.5B",
        "actor_rollout_ref.rollout.name=vllm",
        "actor_rollout_ref.rollout.n=5",
        "actor_rollout_ref.rollout.multi_turn.enable=True",
        f"actor_rollout_ref.rollout.multi_turn.tool_config_path={TOOLS_YAML}",
        "actor_rollout_ref.rollout.multi_turn.max_tool_response_length=8500",
        "reward.custom_reward_function.path=pkg://metis_pytest.rewards.verl",
        "reward.custom_reward_function.name=compute_score_async",
        *extra,
    ]
    config_dir = Path(verl.__file__).parent / "trainer" / "config"
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        return compose(config_name="ppo_trainer", overrides=overrides)


class Decoder:
    """The tokenizer the reward manager needs: ``decode`` gives the completion being scored."""

    def __init__(self) -> None:
        self.text = ""

    def decode(self, ids: Any, skip_special_tokens: bool = True) -> str:
        return self.text


def test_rlhf_dataset_loads_our_parquet_with_our_tools(tmp_path: Path) -> None:
    _verl()
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    export("ace", tmp_path / "ace", source=str(DEMO), progress=False)
    export("gsm8k", tmp_path / "gsm8k", source=str(GSM8K_SMOKE), progress=False)
    config = OmegaConf.create({"prompt_key": "prompt", "max_prompt_length": 512, "filter_overlong_prompts": False,
                               "return_raw_chat": True, "tool_config_path": str(TOOLS_YAML),
                               "cache_dir": str(tmp_path / "cache")})
    files = [str(tmp_path / "ace" / f"{split}.parquet") for split in ("train", "test")]
    dataset = RLHFDataset(data_files=files, tokenizer=None, config=config)
    assert dataset.tool_schemas == _shown_schemas()  # verl loaded our tools (a failure only warns)
    by_id = {r["extra_info"]["row_id"]: r for r in _rows(tmp_path / "ace")}
    assert len(dataset) == len(by_id) == 3
    for i in range(len(dataset)):
        item = dataset[i]
        row = by_id[item["extra_info"]["row_id"]]
        assert item["data_source"] == "ace" and item["agent_name"] == "tool_agent"
        assert list(item["raw_prompt"]) == row["prompt"]
        assert item["tools_kwargs"] == {tool: {"create_kwargs": {"row_id": row["extra_info"]["row_id"]}}
                                        for tool in ("web_search", "browse_page")}
        assert item["index"] == row["extra_info"]["index"]
        assert item["reward_model"] == row["reward_model"] and item["extra_info"]["criteria"] == row["extra_info"]["criteria"]

    gsm8k = RLHFDataset(data_files=[str(tmp_path / "gsm8k" / "train.parquet")], tokenizer=None,
                        config=OmegaConf.create({"filter_overlong_prompts": False, "cache_dir": str(tmp_path / "c")}))
    first = gsm8k[0]
    assert first["data_source"] == "gsm8k" and first["tools_kwargs"] == {} and first["raw_prompt"][-1]["role"] == "user"


def _one_sample(data_source: str, ground_truth: str, extra_info: dict[str, Any],
                tool_extra_fields: dict[str, Any] | None = None) -> Any:
    import numpy as np
    import torch
    from verl import DataProto

    non_tensors: dict[str, Any] = {
        "data_source": np.array([data_source], dtype=object),
        "reward_model": np.array([{"style": "rule", "ground_truth": ground_truth}], dtype=object),
        "extra_info": np.array([extra_info], dtype=object),
    }
    if tool_extra_fields is not None:
        non_tensors["tool_extra_fields"] = np.array([tool_extra_fields], dtype=object)
    return DataProto.from_dict(tensors={"prompts": torch.tensor([[1, 2, 3]]), "responses": torch.tensor([[4, 5, 6]]),
                                        "attention_mask": torch.ones(1, 6, dtype=torch.int64)},
                               non_tensors=non_tensors)


def test_verls_reward_manager_scores_a_batch_with_our_function(tmp_path: Path) -> None:
    _verl()
    from verl.trainer.ppo.reward import load_reward_manager

    export("gsm8k", tmp_path / "gsm8k", source=str(GSM8K_SMOKE), progress=False)
    decoder = Decoder()
    manager = load_reward_manager(grpo_config("reward.custom_reward_function.name=compute_score"), decoder)
    scores = []
    for row in _rows(tmp_path / "gsm8k"):
        gold = row["reward_model"]["ground_truth"]
        for completion in (f"So it is {gold}.\n<answer>{gold}</answer>", "<answer>-1</answer>"):
            decoder.text = completion
            out = manager.loop.run_until_complete(manager.run_single(
                _one_sample(row["data_source"], gold, dict(row["extra_info"]))))
            expected = compute_score(row["data_source"], completion, gold, row["extra_info"])
            assert out["reward_score"] == expected["score"]
            assert out["reward_extra_info"] == expected
            scores.append(out["reward_score"])
    assert 0.0 in scores and 1.0 in scores


def test_verls_reward_manager_gives_the_ace_judge_the_pages_the_tools_left(tmp_path: Path, scripted_llm_factory) -> None:
    _verl()
    from verl.trainer.ppo.reward import load_reward_manager

    from tests.rewards.test_parity_ace import judge

    grader = scripted_llm_factory(default=judge)
    export("ace", tmp_path / "ace", source=str(DEMO), progress=False)
    [row] = [r for r in _rows(tmp_path / "ace") if r["extra_info"]["row_id"] == "ace-shopping-9001"]
    page = json.loads((DEMO / "snapshot.json").read_text())["pages"]["https://trailgear.example/products/arctic-trail-750"]
    answer = ("I recommend the Arctic Trail 750 ml Insulated Steel Bottle: $24.99, 750 ml, cold for 24 hours. "
              "Buy it here: https://trailgear.example/products/arctic-trail-750")
    judged = [f"+reward.custom_reward_function.reward_kwargs.{k}={v}" for k, v in
              {"judge_model": "grader", "judge_backend": "openai", "judge_api_base": grader.base_url}.items()]
    decoder = Decoder()
    decoder.text = answer
    manager = load_reward_manager(grpo_config(*judged), decoder)
    out = manager.loop.run_until_complete(manager.run_single(_one_sample(
        "ace", row["reward_model"]["ground_truth"], dict(row["extra_info"]), {"sources": [page]})))
    expected = asyncio.run(compute_score_async("ace", answer, row["reward_model"]["ground_truth"],
                                               {**row["extra_info"], "sources": [page]}, judge_model="grader",
                                               judge_backend="openai", judge_api_base=grader.base_url))
    assert out["reward_score"] == expected["score"] == 1.0 and out["reward_extra_info"] == expected


def test_verls_tool_loader_builds_our_tools_and_its_agent_loop_calls_them(tmp_path: Path) -> None:
    _verl()
    from verl.experimental.agent_loop.tool_agent_loop import AgentData, ToolAgentLoop
    from verl.experimental.agent_loop.tool_parser import FunctionCall
    from verl.tools.tool_registry import initialize_tools_from_config

    from metis_pytest.rewards.verl_tools import BrowsePageTool, WebSearchTool

    shipped = initialize_tools_from_config(str(TOOLS_YAML))
    assert [type(t) for t in shipped] == [WebSearchTool, BrowsePageTool]
    assert [t.tool_schema.model_dump(exclude_unset=True, exclude_none=True) for t in shipped] == _shown_schemas()

    data = yaml.safe_load(TOOLS_YAML.read_text())
    for entry in data["tools"]:
        entry["config"].update(snapshot=str(DEMO / "snapshot.json"), snapshot_mode="replay")
    (tmp_path / "tools.yaml").write_text(yaml.safe_dump(data))
    tools = {t.name: t for t in initialize_tools_from_config(str(tmp_path / "tools.yaml"))}
    loop = SimpleNamespace(tools=tools, max_tool_response_length=8500, tool_response_truncate_side="middle")
    tools_kwargs = {tool: {"create_kwargs": {"row_id": "ace-shopping-9001"}} for tool in tools}
    agent_data = AgentData(messages=[], image_data=None, video_data=None, audio_data=None, mm_processor_kwargs=None,
                           metrics={}, request_id="r1", tools_kwargs=tools_kwargs)
    url = "https://trailgear.example/products/arctic-trail-750"

    async def calls() -> list[Any]:
        return [await ToolAgentLoop._call_tool(loop, FunctionCall(name=name, arguments=json.dumps(args)),
                                               tools_kwargs, agent_data)
                for name, args in (("web_search", {"query": "stainless steel water bottle 750 ml under $30 keeps "
                                                             "cold 24 hours"}),
                                   ("browse_page", {"url": url}), ("browse_page", {"url": "http://127.0.0.1/x"}))]

    (found, _, searched), (read, _, _), (refused, _, _) = asyncio.run(calls())
    assert url in found.text and searched["row_id"] == "ace-shopping-9001"
    assert read.text.startswith(f"URL: {url}") and "$24.99" in read.text
    assert refused.text.startswith("Error: refused http://127.0.0.1/x")
    assert [s["url"] for s in agent_data.extra_fields["sources"]] == [url]


def test_the_grpo_config_composes_with_our_overrides() -> None:
    _verl()
    from verl.utils.config import omega_conf_to_dataclass

    config = grpo_config("+reward.custom_reward_function.reward_kwargs.judge_model=openai/gpt-4o")
    assert config.algorithm.adv_estimator == "grpo"
    assert config.reward.custom_reward_function.path == "pkg://metis_pytest.rewards.verl"
    assert config.reward.custom_reward_function.name == "compute_score_async"
    assert config.reward.custom_reward_function.reward_kwargs.judge_model == "openai/gpt-4o"
    multi_turn = omega_conf_to_dataclass(config.actor_rollout_ref.rollout.multi_turn)
    assert multi_turn.enable and multi_turn.tool_config_path == str(TOOLS_YAML)
    assert multi_turn.max_tool_response_length == 8500
    assert config.data.tool_config_path == str(TOOLS_YAML)  # the dataset sees the same tools
    assert config.actor_rollout_ref.rollout.n == 5
