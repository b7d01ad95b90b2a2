"""ACE's verl tools (``metis_pytest.rewards.verl_tools``) against a stand-in of verl 0.9.1's tool API.

verl is not installed here, so the tests put a minimal stand-in for ``verl.tools.base_tool`` and
``verl.tools.schemas`` into ``sys.modules``. It mirrors the signatures of verl 0.9.1 as read from the
released wheel (``verl==0.9.1`` on PyPI, ``verl/version/version`` = 0.9.1; the GitHub mirror available
here stops at 0.8.0.dev, so no tag could be read): ``verl/tools/base_tool.py`` (``BaseTool(config,
tool_schema)``; ``create(instance_id=None, **kwargs) -> (instance_id, ToolResponse)``;
``execute(instance_id, parameters, **kwargs) -> (ToolResponse, reward, metrics)``;
``calc_reward(instance_id, **kwargs) -> float``; ``release(instance_id, **kwargs)``),
``verl/tools/schemas.py`` (the pydantic ``OpenAIFunctionToolSchema`` and ``ToolResponse``), and the
two callers the tools meet: ``initialize_tools_from_config`` in ``verl/tools/tool_registry.py`` (the
loader) and ``ToolAgentLoop._call_tool`` in ``verl/experimental/agent_loop/tool_agent_loop.py`` (create
with ``create_kwargs=``, execute with ``agent_data=``, release, one instance per call; an exception
becomes the text ``Error executing tool ...``). The real verl runs the same checks in
``tests/verl_real/`` (``tox -e verl``).

The web is the loopback fakes of SearchAPI.io and Jina Reader (``fake_searchapi``, ``fake_jina``) or
the ACE demo's recorded snapshot; no test reaches the internet.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, Field

from evals.ace.benchmark import OPTIONS
from metis_pytest.tools.toolbox import WebToolbox

REPO = Path(__file__).resolve().parents[2]
TOOLS_YAML = REPO / "metis_pytest" / "rewards" / "ace_tools.yaml"
DEMO = REPO / "datasets" / "ace_demo"
PUBLIC = "http://93.184.216.34"  # a public address literal: passes the URL check with no DNS here
PAGE_URL = f"{PUBLIC}/products/arctic-trail-750"
PAGE = {"title": "Arctic Trail 750", "content": "Price: $24.99. Capacity: 750 ml. Cold for 24 hours. " * 200}
RESULTS = {"steel bottle": [{"title": "Arctic Trail 750", "link": PAGE_URL, "snippet": "750 ml, $24.99"}]}


# ----------------------------------------------------------------------------- the stand-in


class _Property(BaseModel):
    type: str | list[str]
    description: str | None = None
    enum: list[Any] | None = None


class _Parameters(BaseModel):
    type: str
    properties: dict[str, _Property]
    required: list[str] = Field(default_factory=list)


class _Function(BaseModel):
    name: str
    description: str
    parameters: _Parameters = Field(default_factory=lambda: _Parameters(type="object", properties={}, required=[]))
    strict: bool = False


class OpenAIFunctionToolSchema(BaseModel):
    type: str
    function: _Function


class ToolResponse(BaseModel):
    text: str | None = None
    image: list[Any] | None = None
    video: list[Any] | None = None


class BaseTool:
    def __init__(self, config: dict, tool_schema: OpenAIFunctionToolSchema | None) -> None:
        self.config = config
        self.tool_schema = tool_schema or self.get_openai_tool_schema()
        assert self.tool_schema is not None, "Tool schema is not set!"
        self.name = self.tool_schema.function.name

    def get_openai_tool_schema(self) -> OpenAIFunctionToolSchema:
        return self.tool_schema

    async def create(self, instance_id: str | None = None, **kwargs: Any) -> tuple[str, ToolResponse]:
        return instance_id or "base", ToolResponse()

    async def execute(self, instance_id: str, parameters: dict[str, Any], **kwargs: Any
                      ) -> tuple[ToolResponse, float, dict]:
        return ToolResponse(text="Updated the tool state."), 0.0, {}

    async def calc_reward(self, instance_id: str, **kwargs: Any) -> float:
        return 0.0

    async def release(self, instance_id: str, **kwargs: Any) -> None:
        pass


class AgentData:
    """The part of verl's ``AgentData`` the tools touch: one per trajectory, ``extra_fields`` for tool data."""

    def __init__(self, tools_kwargs: dict[str, Any]) -> None:
        self.tools_kwargs = tools_kwargs
        self.extra_fields: dict[str, Any] = {}


class Verl(types.SimpleNamespace):
    """The stand-in, and verl's two callers of the tools re-enacted step by step."""

    def load_tools(self, path: Path | str) -> dict[str, Any]:
        """``initialize_tools_from_config``: OmegaConf.load, ``class_name`` imported, ``config.type`` native,
        ``tool_schema`` validated into ``OpenAIFunctionToolSchema``, ``tool_cls(config=..., tool_schema=...)``."""
        from omegaconf import OmegaConf

        tools = {}
        for entry in OmegaConf.load(path).tools:
            module, name = entry.class_name.rsplit(".", 1)
            cls = getattr(importlib.import_module(module), name)
            assert entry.config.type == "native"
            schema = entry.get("tool_schema", None)
            tool = cls(config=OmegaConf.to_container(entry.config, resolve=True),
                       tool_schema=None if schema is None else OpenAIFunctionToolSchema.model_validate(
                           OmegaConf.to_container(schema, resolve=True)))
            tools[tool.name] = tool
        return tools

    async def call_tool(self, tools: dict[str, Any], name: str, arguments: str, agent_data: AgentData
                        ) -> tuple[Any, float, dict]:
        """``ToolAgentLoop._call_tool`` for a ``BaseTool`` (text responses, no truncation)."""
        if name not in tools:
            return ToolResponse(text=f"Unknown function '{name}'. Available tools: {list(tools)}"), 0.0, {}
        try:
            args = json.loads(arguments)
        except (json.JSONDecodeError, TypeError) as e:
            return ToolResponse(text=f"Invalid JSON in arguments for '{name}': {e}"), 0.0, {}
        tool, instance_id = None, None
        try:
            tool = tools[name]
            kwargs = agent_data.tools_kwargs.get(name, {})
            instance_id, _ = await tool.create(create_kwargs=kwargs.get("create_kwargs", {}))
            response, reward, metrics = await tool.execute(instance_id, args, agent_data=agent_data)
        except Exception as e:
            return ToolResponse(text=f"Error executing tool '{name}': {e}"), 0.0, {}
        finally:
            if tool and instance_id:
                await tool.release(instance_id)
        return ToolResponse(text=response.text), reward, metrics


@pytest.fixture
def verl(monkeypatch: pytest.MonkeyPatch) -> Iterator[Verl]:
    """The stand-in in ``sys.modules`` and ``metis_pytest.rewards.verl_tools`` imported over it (afresh)."""
    modules = {name: types.ModuleType(name) for name in ("verl", "verl.tools", "verl.tools.base_tool",
                                                         "verl.tools.schemas")}
    modules["verl"].__path__ = []  # type: ignore[attr-defined]
    modules["verl.tools"].__path__ = []  # type: ignore[attr-defined]
    modules["verl.tools.base_tool"].BaseTool = BaseTool  # type: ignore[attr-defined]
    modules["verl.tools.schemas"].OpenAIFunctionToolSchema = OpenAIFunctionToolSchema  # type: ignore[attr-defined]
    modules["verl.tools.schemas"].ToolResponse = ToolResponse  # type: ignore[attr-defined]
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    sys.modules.pop("metis_pytest.rewards.verl_tools", None)
    tools = importlib.import_module("metis_pytest.rewards.verl_tools")
    try:
        yield Verl(tools=tools)
    finally:
        sys.modules.pop("metis_pytest.rewards.verl_tools", None)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def config_file(tmp_path: Path, **changes: dict[str, Any]) -> Path:
    """``ace_tools.yaml`` with each tool's ``config`` updated (``web_search={...}``, ``browse_page={...}``)."""
    data = yaml.safe_load(TOOLS_YAML.read_text())
    for entry in data["tools"]:
        entry["config"].update(changes.get(entry["tool_schema"]["function"]["name"], {}))
    path = tmp_path / "tools.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def live_tools(verl: Verl, tmp_path: Path, searchapi: Any, jina: Any, **web: Any) -> dict[str, Any]:
    urls = {"searchapi_url": searchapi.base_url, "jina_url": jina.base_url, **web}
    return verl.load_tools(config_file(tmp_path, web_search=urls, browse_page=urls))


@pytest.fixture
def web(fake_searchapi: Any, fake_jina: Any) -> tuple[Any, Any]:
    fake_searchapi.script(RESULTS)
    fake_jina.script({PAGE_URL: PAGE})
    return fake_searchapi, fake_jina


def trajectory(row_id: str = "ace-shopping-1") -> AgentData:
    """A trajectory with the ``tools_kwargs`` an exported ACE row carries."""
    return AgentData({tool: {"create_kwargs": {"row_id": row_id}} for tool in ("web_search", "browse_page")})


# ----------------------------------------------------------------------------- the tool config


def test_the_yaml_schemas_are_the_ones_the_pytest_agent_gets_and_the_caps_are_aces() -> None:
    data = yaml.safe_load(TOOLS_YAML.read_text())
    toolbox_schemas = WebToolbox.__new__(WebToolbox).schemas()
    assert [entry["tool_schema"] for entry in data["tools"]] == toolbox_schemas
    assert [entry["class_name"] for entry in data["tools"]] == [
        "metis_pytest.rewards.verl_tools.WebSearchTool", "metis_pytest.rewards.verl_tools.BrowsePageTool"]
    ace = {option.ini: option.default for option in OPTIONS}
    web_search, browse_page = (entry["config"] for entry in data["tools"])
    assert web_search == {"type": "native", "max_searches": ace["ace_max_searches"]}
    assert browse_page == {"type": "native", "max_page_reads": ace["ace_max_page_reads"],
                           "page_chars": ace["ace_page_chars"]}


def test_verls_loader_steps_build_both_tools_from_the_yaml(verl: Verl) -> None:
    tools = verl.load_tools(TOOLS_YAML)
    assert sorted(tools) == ["browse_page", "web_search"]
    assert type(tools["web_search"]) is verl.tools.WebSearchTool
    assert type(tools["browse_page"]) is verl.tools.BrowsePageTool
    # What verl shows the model (model_dump(exclude_unset=True, exclude_none=True), as ToolAgentLoop does):
    # the toolbox's schemas less additionalProperties, a key verl's pydantic schema does not keep.
    shown = [tools[n].tool_schema.model_dump(exclude_unset=True, exclude_none=True) for n in ("web_search",
                                                                                              "browse_page")]
    expected = WebToolbox.__new__(WebToolbox).schemas()
    for schema in expected:
        del schema["function"]["parameters"]["additionalProperties"]
    assert shown == expected


def test_without_a_schema_in_the_config_a_tool_takes_the_toolbox_one_and_a_wrong_name_is_refused(verl: Verl) -> None:
    tool = verl.tools.BrowsePageTool({"type": "native"}, None)
    assert tool.name == "browse_page" and tool.tool_schema.function.description.startswith("Read a web page")
    wrong = OpenAIFunctionToolSchema.model_validate(WebToolbox.__new__(WebToolbox).schemas()[0])
    with pytest.raises(ValueError, match="BrowsePageTool is the 'browse_page' tool; its tool_schema names 'web_search'"):
        verl.tools.BrowsePageTool({"type": "native"}, wrong)


@pytest.mark.parametrize(("config", "message"), [
    ({"max_serches": 3}, r"unknown config key\(s\) \['max_serches'\]"),
    ({"snapshot": "x.json", "snapshot_mode": "rewind"}, "snapshot_mode 'rewind'"),
    ({"snapshot_mode": "replay"}, "snapshot_mode needs a snapshot"),
    ({"max_searches": -1}, "must not be negative"),
])
def test_a_bad_config_is_refused_when_the_tool_is_built(verl: Verl, config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        verl.tools.WebSearchTool({"type": "native", **config}, None)


def test_importing_the_reward_module_loads_neither_verl_nor_the_tools_and_the_tools_need_verl() -> None:
    script = (
        "import sys\n"
        "import metis_pytest.rewards, metis_pytest.rewards.verl\n"
        "assert not [m for m in sys.modules if m == 'verl' or m.startswith('verl.')], 'verl imported'\n"
        "assert 'metis_pytest.rewards.verl_tools' not in sys.modules\n"
        "try:\n"
        "    import metis_pytest.rewards.verl_tools\n"
        "except ModuleNotFoundError as exc:\n"
        "    print(exc, '|', exc.name)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "needs verl: pip install 'metis-pytest[verl]' | verl" in out.stdout


# ----------------------------------------------------------------------------- calls, as verl makes them


def test_search_then_read_through_verls_call_path_and_the_pages_go_to_extra_fields(verl, web, tmp_path) -> None:
    searchapi, jina = web
    tools = live_tools(verl, tmp_path, searchapi, jina)
    agent = trajectory("ace-shopping-9001")

    text, reward, metrics = run(verl.call_tool(tools, "web_search", '{"query": "steel bottle"}', agent))
    assert reward == 0.0 and metrics == {"ok": True, "retryable": False, "row_id": "ace-shopping-9001"}
    assert text.text.startswith("Results for 'steel bottle':")
    assert PAGE_URL in text.text and agent.extra_fields == {}  # a search reads no page
    [request] = searchapi.requests
    assert request.params["q"] == "steel bottle" and request.params["num"] == "10"

    page, _, metrics = run(verl.call_tool(tools, "browse_page", json.dumps({"url": PAGE_URL}), agent))
    assert metrics["ok"] and page.text.startswith(f"URL: {PAGE_URL}\nTitle: Arctic Trail 750")
    assert "[... page truncated: showing the first 8,000 of" in page.text  # page_chars from the YAML
    assert agent.extra_fields["sources"] == [{"url": PAGE_URL, "title": "Arctic Trail 750",
                                              "content": PAGE["content"].strip("\n"), "status": 200,
                                              "published_time": None}]
    run(verl.call_tool(tools, "browse_page", json.dumps({"url": PAGE_URL}), agent))  # read again: one source
    assert len(agent.extra_fields["sources"]) == 1 and len(jina.requests) == 2
    assert tools["browse_page"]._instances == {} and tools["web_search"]._instances == {}  # all released


def test_the_toolbox_output_is_the_pytest_agents(verl, web, tmp_path) -> None:
    """Same arguments, same web: the verl tool's text is what WebToolbox gives the pytest agent."""
    searchapi, jina = web
    tools = live_tools(verl, tmp_path, searchapi, jina)
    box = WebToolbox(tools["browse_page"].web, page_chars=8000)
    for name, args in (("web_search", {"query": "steel bottle"}), ("browse_page", {"url": PAGE_URL}),
                       ("browse_page", {"url": f"{PUBLIC}/nowhere"})):
        response, _, _ = run(verl.call_tool(tools, name, json.dumps(args), trajectory()))
        assert response.text == run(box.call(name, args)).content


def test_the_caps_hold_per_trajectory_across_verls_one_instance_per_call(verl, web, tmp_path) -> None:
    searchapi, jina = web
    tools = verl.load_tools(config_file(tmp_path, web_search={"searchapi_url": searchapi.base_url, "max_searches": 2},
                                        browse_page={"jina_url": jina.base_url, "max_page_reads": 1}))
    first, second = trajectory("a"), trajectory("b")
    search = '{"query": "steel bottle"}'
    texts = [run(verl.call_tool(tools, "web_search", search, first))[0].text for _ in range(3)]
    assert texts[2] == "Error: search limit of 2 reached" and not texts[1].startswith("Error")
    assert not run(verl.call_tool(tools, "web_search", search, second))[0].text.startswith("Error")  # its own cap
    assert len(searchapi.requests) == 3
    read = json.dumps({"url": PAGE_URL})
    run(verl.call_tool(tools, "browse_page", read, first))
    response, _, metrics = run(verl.call_tool(tools, "browse_page", read, first))
    assert response.text == "Error: page read limit of 1 reached" and metrics["ok"] is False
    assert len(first.extra_fields["sources"]) == 1 and len(jina.requests) == 1


def test_without_agent_data_the_caps_hold_per_instance_until_release(verl, web, tmp_path) -> None:
    searchapi, jina = web
    tool = verl.tools.WebSearchTool({"type": "native", "searchapi_url": searchapi.base_url, "max_searches": 1}, None)

    async def session() -> list[str]:
        instance, created = await tool.create("traj-1", row_id="ace-food-9101")  # kwargs given directly
        assert instance == "traj-1" and created.text is None
        out = [(await tool.execute(instance, {"query": "steel bottle"}))[0].text for _ in range(2)]
        assert await tool.calc_reward(instance) == 0.0
        await tool.release(instance)
        with pytest.raises(KeyError, match="no instance 'traj-1'"):
            await tool.execute(instance, {"query": "steel bottle"})
        other, _ = await tool.create()
        out.append((await tool.execute(other, {"query": "steel bottle"}))[0].text)
        return out

    first, capped, fresh = run(session())
    assert capped == "Error: search limit of 1 reached" and not first.startswith("Error") and fresh == first


def test_create_kwargs_are_the_ones_the_export_writes(verl, web, tmp_path) -> None:
    """The tools_kwargs of a row exported by ``metis data export ace`` are accepted as verl passes them;
    any other key is refused (verl turns the exception into the tool's text)."""
    import pyarrow.parquet as pq

    from metis_pytest.export import export

    searchapi, jina = web
    export("ace", tmp_path / "data", source=str(DEMO), progress=False)
    rows = [*pq.read_table(tmp_path / "data" / "train.parquet").to_pylist(),
            *pq.read_table(tmp_path / "data" / "test.parquet").to_pylist()]
    tools = live_tools(verl, tmp_path, searchapi, jina)
    for row in rows:
        extra = row["extra_info"]
        assert extra["need_tools_kwargs"] is True and row["agent_name"] == "tool_agent"
        agent = AgentData(extra["tools_kwargs"])
        _, _, metrics = run(verl.call_tool(tools, "web_search", '{"query": "steel bottle"}', agent))
        assert metrics["row_id"] == extra["row_id"]
    bad = AgentData({"web_search": {"create_kwargs": {"row_id": "r", "ground_truth": "x"}}})
    response, _, _ = run(verl.call_tool(tools, "web_search", '{"query": "steel bottle"}', bad))
    assert response.text == ("Error executing tool 'web_search': web_search: unknown create_kwargs "
                             "['ground_truth']; known: ['row_id']")


# ----------------------------------------------------------------------------- failures, safety, snapshots


def test_a_failing_service_is_a_tool_error_text_never_an_exception(verl, web, tmp_path, monkeypatch) -> None:
    searchapi, jina = web
    tools = live_tools(verl, tmp_path, searchapi, jina)
    missing, _, metrics = run(verl.call_tool(tools, "browse_page", json.dumps({"url": f"{PUBLIC}/gone"}), trajectory()))
    assert missing.text.startswith("Error: Jina Reader answered HTTP 422") and metrics["ok"] is False
    monkeypatch.delenv("SEARCHAPI_IO_KEY")
    unset, _, _ = run(verl.call_tool(tools, "web_search", '{"query": "steel bottle"}', trajectory()))
    assert unset.text == "Error: web search is not configured: SEARCHAPI_IO_KEY is not set"
    empty, _, _ = run(verl.call_tool(tools, "web_search", '{"query": "  "}', trajectory()))
    assert empty.text == "Error: web_search argument 'query' is empty"


@pytest.mark.parametrize(("url", "reason"), [
    ("http://127.0.0.1:8080/admin", "a loopback address"),
    ("http://10.0.0.7/intranet", "a private address"),
    ("http://[::ffff:169.254.169.254]/latest/meta-data", "IPv4-mapped 169.254.169.254, a link-local address"),
    ("file:///etc/passwd", "only http and https URLs can be read"),
])
def test_an_unsafe_url_is_refused_before_anything_is_fetched(verl, web, tmp_path, url, reason) -> None:
    searchapi, jina = web
    tools = live_tools(verl, tmp_path, searchapi, jina)
    agent = trajectory()
    response, _, metrics = run(verl.call_tool(tools, "browse_page", json.dumps({"url": url}), agent))
    assert response.text.startswith("Error: refused ") and reason in response.text
    assert metrics == {"ok": False, "retryable": False, "row_id": "ace-shopping-1"}
    assert jina.requests == [] and agent.extra_fields["sources"] == []


def test_a_recorded_snapshot_replays_the_same_answers_with_the_services_gone(verl, web, tmp_path) -> None:
    searchapi, jina = web
    snapshot = tmp_path / "web.json"
    recording = live_tools(verl, tmp_path, searchapi, jina, snapshot=str(snapshot))
    calls = [("web_search", {"query": "steel bottle"}), ("browse_page", {"url": PAGE_URL})]
    recorded = [run(verl.call_tool(recording, n, json.dumps(a), trajectory()))[0].text for n, a in calls]
    again = [run(verl.call_tool(recording, n, json.dumps(a), trajectory()))[0].text for n, a in calls]
    assert again == recorded and len(searchapi.requests) == len(jina.requests) == 1  # served from the snapshot
    searchapi.stop()
    jina.stop()
    replaying = verl.load_tools(config_file(tmp_path, web_search={"snapshot": str(snapshot), "snapshot_mode": "replay"},
                                            browse_page={"snapshot": str(snapshot), "snapshot_mode": "replay"}))
    agent = trajectory()
    assert [run(verl.call_tool(replaying, n, json.dumps(a), agent))[0].text for n, a in calls] == recorded
    assert agent.extra_fields["sources"][0]["url"] == PAGE_URL
    unknown, _, _ = run(verl.call_tool(replaying, "browse_page", json.dumps({"url": f"{PUBLIC}/other"}), agent))
    assert unknown.text == f"Error: not in snapshot: no recorded page for {PUBLIC}/other"


def test_the_tools_of_one_process_with_the_same_web_share_it(verl, tmp_path) -> None:
    replay = {"type": "native", "snapshot": str(DEMO / "snapshot.json"), "snapshot_mode": "replay"}
    search, read = verl.tools.WebSearchTool(replay, None), verl.tools.BrowsePageTool(replay, None)
    assert search.web is read.web and search.web.replay
    assert verl.tools.WebSearchTool({"type": "native"}, None).web is not search.web
