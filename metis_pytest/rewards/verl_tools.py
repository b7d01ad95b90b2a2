"""ACE's tools for verl: ``web_search`` and ``browse_page`` as verl ``BaseTool`` s over :mod:`metis_pytest.tools`.

Point verl's multi-turn rollout at the tool config shipped beside this module (``ace_tools.yaml``)::

    actor_rollout_ref.rollout.multi_turn.enable=True
    actor_rollout_ref.rollout.multi_turn.tool_config_path=$(python -c "import importlib.resources as r; \\
        print(r.files('metis_pytest.rewards') / 'ace_tools.yaml')")
    actor_rollout_ref.rollout.multi_turn.max_tool_response_length=8500   # verl's default cuts at 256 characters

Each call is one :meth:`~metis_pytest.tools.toolbox.WebToolbox.call`: the same clients (SearchAPI.io,
Jina Reader, their retries, keys read from the environment), caps, URL check and formatting as the
pytest agent, over the live web or a :class:`~metis_pytest.tools.snapshot.Snapshot`. Nothing of the
tools is written here. A failed call (a cap reached, an unsafe URL, a service that failed, a page not
in a replayed snapshot) is the toolbox's ``Error: ...`` line as the tool's text, with reward 0.0.

**One trajectory, one toolbox.** verl 0.9.1's tool agent loop (``ToolAgentLoop._call_tool`` in
``verl/experimental/agent_loop/tool_agent_loop.py``) runs ``create`` (with no instance id: a new one),
``execute(instance_id, parameters, agent_data=...)`` and ``release`` around *every* call, so an instance
lives for one call. The caps therefore hold per trajectory: per ``agent_data`` (verl's ``AgentData``,
one per trajectory, held by a weak reference so the state goes with it) or, for a caller that passes
no ``agent_data`` and keeps one instance id across its calls, per instance until ``release``.

**The pages reach the reward.** After each ``browse_page`` call with ``agent_data``, the pages read in
the trajectory (full text, one per URL, as :meth:`WebToolbox.pages` gives them) are written to
``agent_data.extra_fields["sources"]`` as ``[{url, title, content, status, published_time}]``. verl
0.9.1's reward-loop managers (``naive``, ``rate_limited``, ``remote``) merge a trajectory's
``extra_fields`` into ``extra_info`` (``extra_info.update(tool_extra_fields.items())``) when the rollout
computes rewards as it goes (no reward model, or one on its own resource pool), which is where
:func:`metis_pytest.rewards.verl.compute_score_async` reads ``sources``. With no ``agent_data``,
nothing reaches the reward.

**create_kwargs.** Exported ACE rows (``metis data export ace --format verl``) carry
``tools_kwargs: {web_search: {create_kwargs: {row_id}}, browse_page: {create_kwargs: {row_id}}}``;
``create`` takes exactly ``row_id`` (verl passes it as ``create_kwargs=...``), reported in the call's
metrics and in the log line of a failed call. Any other key is a ``ValueError``.

**Config** (each tool's ``config`` in the YAML; all optional but verl's ``type: native``; an unknown key
is a ``ValueError``): ``max_searches``, ``max_page_reads``, ``page_chars`` (the toolbox's caps, ACE's
``--max-searches``/``--max-page-reads``/``--page-chars``; the toolbox's defaults when absent);
``searchapi_url``, ``jina_url`` (the services' endpoints); ``snapshot`` (a file path) with
``snapshot_mode``: ``record`` (the default: served from the file when it holds the query or URL, else
fetched live and added) or ``replay`` (served from the file only, no network). The tools of one
process with the same web settings share one web (clients and snapshot).

verl is imported by this module only (``import metis_pytest.rewards.verl`` does not load it), at import
time: verl loads it through the tool config's ``class_name``.
"""

from __future__ import annotations

import logging
import threading
import uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

try:
    from verl.tools.base_tool import BaseTool
    from verl.tools.schemas import OpenAIFunctionToolSchema, ToolResponse
except ModuleNotFoundError as exc:
    if exc.name is None or not exc.name.startswith("verl"):
        raise
    raise ModuleNotFoundError("metis_pytest.rewards.verl_tools subclasses verl's BaseTool and needs verl: "
                              "pip install 'metis-pytest[verl]'", name=exc.name) from exc

from metis_pytest.tools.snapshot import Snapshot
from metis_pytest.tools.toolbox import BROWSE_PAGE, WEB_SEARCH, WebToolbox
from metis_pytest.tools.web import JinaReaderClient, LiveWeb, SearchAPIClient, WebBackend

__all__ = ["CREATE_KWARGS", "SNAPSHOT_MODES", "SOURCES_KEY", "BrowsePageTool", "WebSearchTool", "web_for"]

logger = logging.getLogger("metis_pytest.rewards.verl_tools")

SOURCES_KEY = "sources"
"""The ``extra_fields`` key the pages go under: the ``extra_info`` key ``compute_score_async`` reads."""
CREATE_KWARGS = frozenset({"row_id"})
SNAPSHOT_MODES = ("record", "replay")
_CAPS = {"max_searches": "max_searches", "max_page_reads": "max_reads", "page_chars": "page_chars"}
_WEB_KEYS = ("searchapi_url", "jina_url", "snapshot", "snapshot_mode")
_VERL_KEYS = ("type",)

_WEBS: dict[tuple[str | None, ...], WebBackend] = {}
_WEBS_LOCK = threading.Lock()


def _web_key(config: dict[str, Any]) -> tuple[str | None, ...]:
    unknown = set(config) - {*_CAPS, *_WEB_KEYS, *_VERL_KEYS}
    if unknown:
        raise ValueError(f"unknown config key(s) {sorted(unknown)} for the ACE web tools; known: "
                         f"{', '.join([*_CAPS, *_WEB_KEYS])}")
    snapshot = config.get("snapshot")
    mode = str(config.get("snapshot_mode") or "record")
    if mode not in SNAPSHOT_MODES:
        raise ValueError(f"snapshot_mode {mode!r}: expected one of {', '.join(SNAPSHOT_MODES)}")
    if snapshot is None and config.get("snapshot_mode") is not None:
        raise ValueError("snapshot_mode needs a snapshot (the file to record into or replay)")
    return (config.get("searchapi_url"), config.get("jina_url"),
            str(Path(str(snapshot)).expanduser().resolve()) if snapshot else None, mode if snapshot else None)


def web_for(config: dict[str, Any]) -> WebBackend:
    """The web of a tool ``config``: the live clients, or a snapshot recorded or replayed; one per
    process for the same settings (shared by the tools and their trajectories)."""
    key = _web_key(config)
    with _WEBS_LOCK:
        web = _WEBS.get(key)
        if web is None:
            searchapi_url, jina_url, snapshot, mode = key
            if snapshot is not None and mode == "replay":
                web = Snapshot(snapshot, mode="replay").web()
            else:
                search: dict[str, Any] = {"base_url": searchapi_url} if searchapi_url else {}
                read: dict[str, Any] = {"base_url": jina_url} if jina_url else {}
                live = LiveWeb(SearchAPIClient(**search), JinaReaderClient(**read))
                web = Snapshot(snapshot, mode="record").web(live) if snapshot is not None else live
            _WEBS[key] = web
        return web


@dataclass
class _Instance:
    row_id: str | None
    toolbox: WebToolbox | None = field(default=None, repr=False)  # a caller without agent_data


class _WebTool(BaseTool):
    """One of the web toolbox's tools as a verl tool; the subclasses name which."""

    tool_name: ClassVar[str]

    def __init__(self, config: dict[str, Any], tool_schema: OpenAIFunctionToolSchema | None = None) -> None:
        config = dict(config or {})
        self.web = web_for(config)
        self._caps: dict[str, Any] = {_CAPS[k]: int(v) for k, v in config.items() if k in _CAPS and v is not None}
        WebToolbox(self.web, **self._caps)  # bad caps fail here, not on the first call
        super().__init__(config, tool_schema)
        if self.name != self.tool_name:
            raise ValueError(f"{type(self).__name__} is the {self.tool_name!r} tool; its tool_schema names "
                             f"{self.name!r}")
        self._trajectories: weakref.WeakKeyDictionary[Any, WebToolbox] = weakref.WeakKeyDictionary()
        self._instances: dict[str, _Instance] = {}

    def get_openai_tool_schema(self) -> OpenAIFunctionToolSchema:
        """The schema given in the tool config, else the one the toolbox gives the pytest agent."""
        given = self.__dict__.get("tool_schema")
        if given is not None:
            return given
        [schema] = [s for s in WebToolbox(self.web).schemas() if s["function"]["name"] == self.tool_name]
        return OpenAIFunctionToolSchema.model_validate(schema)

    def _new_toolbox(self) -> WebToolbox:
        return WebToolbox(self.web, **self._caps)

    def _toolbox(self, instance_id: str, agent_data: Any = None) -> WebToolbox:
        """The toolbox of the trajectory: ``agent_data``'s, else the instance's."""
        if agent_data is not None:
            box = self._trajectories.get(agent_data)
            if box is None:
                box = self._trajectories[agent_data] = self._new_toolbox()
            return box
        instance = self._instance(instance_id)
        if instance.toolbox is None:
            instance.toolbox = self._new_toolbox()
        return instance.toolbox

    def _instance(self, instance_id: str) -> _Instance:
        instance = self._instances.get(instance_id)
        if instance is None:
            raise KeyError(f"{self.name}: no instance {instance_id!r} (create it first, or it was released)")
        return instance

    async def create(self, instance_id: str | None = None, **kwargs: Any) -> tuple[str, ToolResponse]:
        given = {**dict(kwargs.pop("create_kwargs", None) or {}), **kwargs}
        unknown = set(given) - CREATE_KWARGS
        if unknown:
            raise ValueError(f"{self.name}: unknown create_kwargs {sorted(unknown)}; known: {sorted(CREATE_KWARGS)}")
        instance_id = instance_id or str(uuid.uuid4())
        row_id = given.get("row_id")
        self._instances[instance_id] = _Instance(row_id=None if row_id is None else str(row_id))
        return instance_id, ToolResponse()

    async def execute(self, instance_id: str, parameters: dict[str, Any], **kwargs: Any
                      ) -> tuple[ToolResponse, float, dict[str, Any]]:
        instance = self._instance(instance_id)
        agent_data = kwargs.get("agent_data")
        box = self._toolbox(instance_id, agent_data)
        outcome = await box.call(self.name, parameters)
        if agent_data is not None:
            self._publish(box, agent_data)
        if outcome.error:
            logger.info("%s failed for row %s (retryable=%s): %s", self.name, instance.row_id, outcome.retryable,
                        outcome.content)
        return ToolResponse(text=outcome.content), 0.0, {"ok": not outcome.error, "retryable": outcome.retryable,
                                                         "row_id": instance.row_id}

    def _publish(self, box: WebToolbox, agent_data: Any) -> None:
        """What the trajectory's reward needs from this tool (nothing, unless a subclass says)."""

    async def release(self, instance_id: str, **kwargs: Any) -> None:
        self._instances.pop(instance_id, None)


class WebSearchTool(_WebTool):
    """``web_search(query)``: Google results through SearchAPI.io (or a snapshot), capped by ``max_searches``."""

    tool_name = WEB_SEARCH


class BrowsePageTool(_WebTool):
    """``browse_page(url)``: a page through Jina Reader (or a snapshot), after the URL check, capped by
    ``max_page_reads``, cut to ``page_chars``; the trajectory's pages go to ``extra_fields["sources"]``."""

    tool_name = BROWSE_PAGE

    def _publish(self, box: WebToolbox, agent_data: Any) -> None:
        agent_data.extra_fields[SOURCES_KEY] = [page.to_json() for page in box.pages()]
