"""Command-line options of the Metis plugin, each with an ini twin, parsed into one frozen config.

Every option lives in the ``metis`` group. A command-line value wins over the ini value, which wins
over the default. Configuration travels in :class:`MetisConfig`, never through ``os.environ``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from metis_pytest.registry import Option, benchmark_names, get_benchmark

LOCAL_MODEL = "local"


OPTIONS: tuple[Option, ...] = (
    Option("--model", "metis_model",
           "Model to evaluate; repeat the flag or give a comma list, one test item per model. "
           "'local' (the default) is the embedded SmolLM2-135M; otherwise a LiteLLM name such as "
           "'openai/gpt-4o-mini', or a served model name with --backend openai.",
           default=(), kind="list"),
    Option("--backend", "metis_backend",
           "How to reach the models, by registered name: api (LiteLLM provider, key from the "
           "environment), openai (any OpenAI-compatible --api-base such as vLLM or llama.cpp), local "
           "(embedded llama.cpp), or any backend registered with register_backend. "
           "Default: local for 'local', openai when --api-base is given, api otherwise."),
    Option("--api-base", "metis_api_base",
           "Base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1."),
    Option("--api-key-env", "metis_api_key_env",
           "Name of the environment variable that holds the key for --api-base (never the key itself)."),
    Option("--judge-model", "metis_judge_model",
           "Model that grades LLM-judged benchmarks (ACE, HelpSteer); resolved on its own, never sent "
           "to --api-base. GSM8K has no judge and ignores it."),
    Option("--judge-backend", "metis_judge_backend",
           "Backend of the judge (same names as --backend); default chosen like --backend's."),
    Option("--judge-api-base", "metis_judge_api_base",
           "Base URL of an OpenAI-compatible server for the judge (not the policy's --api-base)."),
    Option("--judge-api-key-env", "metis_judge_api_key_env",
           "Name of the environment variable that holds the judge's key (never the key itself)."),
    Option("--runs", "metis_runs", "Independent runs of every row (for mean and std across runs).",
           default=1, kind="int"),
    Option("--max-rows", "metis_max_rows", "Evaluate only the first N rows of each benchmark.",
           kind="int"),
    Option("--concurrency", "metis_concurrency", "Rollouts in flight at once inside one test item.",
           default=8, kind="int"),
    Option("--output-dir", "metis_output_dir", "Where run records are written.", default="runs"),
    Option("--temperature", "metis_temperature", "Sampling temperature sent with every request.",
           default=0.0, kind="float"),
    Option("--max-tokens", "metis_max_tokens", "Completion token limit sent with every request.",
           default=512, kind="int"),
    Option("--request-timeout", "metis_request_timeout", "Seconds before one model request times out.",
           default=120.0, kind="float"),
    Option("--max-retries", "metis_max_retries",
           "Retries (with exponential backoff) of a request that failed with 429, 5xx, a timeout or a "
           "broken connection. A row that still fails is recorded as errored, never scored 0.",
           default=4, kind="int"),
    Option("--max-error-rate", "metis_max_error_rate",
           "Fail the benchmark's test item when more than this fraction of its rows errored.",
           default=0.0, kind="float"),
    Option("--dataset", "metis_dataset",
           "Where a benchmark reads its rows: a local file, or 'hf' for the Hugging Face Hub. "
           "Default: the benchmark's own default (see its README)."),
    Option("--dataset-split", "metis_dataset_split",
           "Split to load from the Hub (GSM8K: test or train). Default: the benchmark's."),
    Option("--dataset-revision", "metis_dataset_revision",
           "Hub revision (commit sha, tag or branch) to load; the resolved commit sha is recorded."),
    Option("--local-model", "metis_local_model",
           "GGUF for the embedded server: a path, or hf:OWNER/REPO/FILE.gguf. Default: SmolLM2-135M-Instruct."),
    Option("--metis-cache-dir", "metis_cache_dir",
           "Where the embedded model's weights are cached. Default: $XDG_CACHE_HOME/metis or ~/.cache/metis."),
    Option("--resume", "metis_resume",
           "Reuse completions already in the run folder (last merged rows, and rows of runs that died) made "
           "under the same benchmark version, completion params, dataset revision and prompt; only missing "
           "and errored rows are sent to the model. Reused completions are scored again.",
           default=False, kind="bool"),
    Option("--replay", "metis_replay",
           "Score the completions of a recorded run (an output dir, or one <benchmark>/<model> folder of it) "
           "with the current scorers: no model is called, no key is needed, no local server is started."),
    Option("--allow-network", "metis_allow_network",
           "Run evaluations marked metis_network (they reach the internet); skipped otherwise.",
           default=False, kind="bool"),
    Option("--gpu", "metis_gpu",
           "Run tests marked metis_gpu even where nvidia-smi is not on PATH.",
           default=False, kind="bool"),
    Option("--ep-upload", "metis_ep_upload",
           "Let Eval Protocol save and upload experiment files to Fireworks (off by default).",
           default=False, kind="bool"),
    Option("--metis-save-baseline", "metis_save_baseline",
           "At session end, write each (benchmark, model) summary and per-row scores of this run to "
           "<baseline dir>/<benchmark>/<model>.json (after any comparison with the old one).",
           default=False, kind="bool"),
    Option("--metis-baseline-dir", "metis_baseline_dir",
           "Where baselines are saved and, by default, compared with (relative to the rootdir).",
           default="baselines"),
    Option("--metis-compare", "metis_compare",
           "Compare every evaluation item with its baseline: with no PATH <baseline dir>/<benchmark>/<model>.json; "
           "PATH a folder laid out the same way, or one baseline file (for its benchmark's items). Write "
           "--metis-compare=PATH, or put test paths first: a bare path after it is read as PATH.",
           kind="optional"),
    Option("--metis-compare-fail", "metis_compare_fail",
           "[BENCH/]METRIC:RULE, repeatable: fail an item whose paired comparison with the baseline breaks the "
           "rule: -2pp (delta below -2 percentage points) or p<0.05 (significant and negative). Implies "
           "--metis-compare.",
           default=(), kind="list"),
    Option("--metis-compare-force", "metis_compare_force",
           "Compare even when the baseline's benchmark version, dataset or prompt hash differ (they are shown).",
           default=False, kind="bool"),
    Option("--shards", "metis_shards",
           "Replicas of each model's server, rows spread round-robin across them (--backend modal: N "
           "containers per --model).", default=1, kind="int"),
    Option("--modal-gpu", "metis_modal_gpu",
           "GPUs of one vLLM replica on Modal, in Modal's syntax (H100, H100:2, A100-80GB:4); tensor "
           "parallel over all of them. Default: by parameter count, 1 x H100 up to 16B, 2 x H100 above."),
    Option("--modal-max-model-len", "metis_modal_max_model_len",
           "vLLM's --max-model-len on Modal (prompt plus completion tokens).", default=8192, kind="int"),
    Option("--modal-tool-parser", "metis_modal_tool_parser",
           "vLLM's --tool-call-parser on Modal, or 'none' for no tool calling. Default: by model family "
           "(hermes for Qwen, llama3_json for Llama, mistral for Mistral)."),
    Option("--modal-hf-secret", "metis_modal_hf_secret",
           "Modal secret that holds HF_TOKEN for the vLLM container, or 'none' (public models only).",
           default="huggingface-secret"),
    Option("--modal-startup-timeout", "metis_modal_startup_timeout",
           "Seconds to wait for a vLLM server on Modal to answer /health (weights download included).",
           default=1200.0, kind="float"),
    Option("--modal-public", "metis_modal_public",
           "Serve ephemeral vLLM endpoints on Modal without proxy auth (by default requests must carry "
           "MODAL_PROXY_TOKEN_ID / MODAL_PROXY_TOKEN_SECRET as Modal-Key / Modal-Secret).",
           default=False, kind="bool"),
)


def benchmark_options() -> list[tuple[str, Option]]:
    """(benchmark, option) for every option a registered benchmark declares."""
    return [(name, opt) for name in benchmark_names() for opt in get_benchmark(name).options]


def add_options(parser: pytest.Parser) -> None:
    """Register every option and its ini twin: the harness's in one ``metis`` group, and each
    registered benchmark's own (``Benchmark.options``) in a group of its own."""
    _add(parser.getgroup("metis", "Metis evaluation harness"), parser, OPTIONS)
    for bench in benchmark_names():
        opts = get_benchmark(bench).options
        if opts:
            _add(parser.getgroup(f"metis-{bench}", f"Metis benchmark {bench}"), parser, opts)


def _add(group: Any, parser: pytest.Parser, options: tuple[Option, ...]) -> None:
    for opt in options:
        if opt.kind == "bool":
            group.addoption(opt.flag, action="store_true", default=None, dest=opt.ini, help=opt.help)
            parser.addini(opt.ini, f"ini twin of {opt.flag}", type="bool", default=opt.default)
            continue
        if opt.kind == "optional":  # a flag with an optional value: given alone, its value is ""
            group.addoption(opt.flag, action="store", nargs="?", const="", default=None, dest=opt.ini,
                            help=f"{opt.help} [ini: {opt.ini}]")
            parser.addini(opt.ini, f"ini twin of {opt.flag}", type="string", default=None)
            continue
        action = "append" if opt.kind == "list" else "store"
        group.addoption(opt.flag, action=action, default=None, dest=opt.ini, choices=opt.choices,
                        help=f"{opt.help} [ini: {opt.ini}]")
        if opt.kind == "list":
            parser.addini(opt.ini, f"ini twin of {opt.flag}", type="linelist", default=list(opt.default))
        else:
            parser.addini(opt.ini, f"ini twin of {opt.flag}", type="string", default=None)


def _parse(opt: Option, raw: Any) -> Any:
    if opt.kind == "optional":
        return raw  # None: not given; "": given without a value
    if raw is None or raw == "" or raw == []:
        return opt.default
    if opt.kind == "list":
        items = [part.strip() for value in raw for part in str(value).split(",")]
        return tuple(item for item in items if item)
    if opt.kind == "bool":
        return bool(raw)
    try:
        if opt.kind == "int":
            return int(raw)
        if opt.kind == "float":
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError
            return value
    except ValueError:
        what = "a number" if opt.kind == "int" else "a finite number"
        raise pytest.UsageError(f"{opt.flag} / {opt.ini}: expected {what}, got {raw!r}") from None
    if opt.choices and raw not in opt.choices:
        raise pytest.UsageError(f"{opt.flag} / {opt.ini}: {raw!r} is not one of {', '.join(opt.choices)}")
    return raw


@dataclass(frozen=True)
class MetisConfig:
    """Everything the options say, parsed and validated once per session."""

    models: tuple[str, ...] = (LOCAL_MODEL,)
    backend: str | None = None
    api_base: str | None = None
    api_key_env: str | None = None
    judge_model: str | None = None
    judge_backend: str | None = None
    judge_api_base: str | None = None
    judge_api_key_env: str | None = None
    runs: int = 1
    max_rows: int | None = None
    concurrency: int = 8
    output_dir: Path = Path("runs")
    temperature: float = 0.0
    max_tokens: int = 512
    request_timeout: float = 120.0
    max_retries: int = 4
    max_error_rate: float = 0.0
    dataset: str | None = None
    dataset_split: str | None = None
    dataset_revision: str | None = None
    local_model: str | None = None
    cache_dir: Path | None = None
    resume: bool = False
    replay: Path | None = None
    allow_network: bool = False
    gpu: bool = False
    ep_upload: bool = False
    save_baseline: bool = False
    baseline_dir: Path = Path("baselines")
    compare: bool = False  # --metis-compare (with or without PATH) or any --metis-compare-fail
    compare_path: Path | None = None
    compare_fail: tuple[str, ...] = ()
    compare_force: bool = False
    shards: int = 1
    modal_gpu: str | None = None
    modal_max_model_len: int = 8192
    modal_tool_parser: str | None = None
    modal_hf_secret: str = "huggingface-secret"
    modal_startup_timeout: float = 1200.0
    modal_public: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("runs", "concurrency", "max_tokens"):
            if getattr(self, name) < 1:
                raise pytest.UsageError(f"--{name.replace('_', '-')} must be at least 1")
        if self.max_rows is not None and self.max_rows < 1:
            raise pytest.UsageError("--max-rows must be at least 1")
        if not 0.0 <= self.max_error_rate <= 1.0:
            raise pytest.UsageError("--max-error-rate must be between 0 and 1")
        if self.max_retries < 0:
            raise pytest.UsageError("--max-retries must be 0 or more")
        if self.shards < 1 or self.modal_max_model_len < 1 or not self.modal_startup_timeout > 0:
            raise pytest.UsageError("--shards and --modal-max-model-len must be at least 1, "
                                    "--modal-startup-timeout more than 0")
        if not self.request_timeout > 0:
            raise pytest.UsageError(f"--request-timeout must be more than 0 seconds, got {self.request_timeout:g}")
        if self.temperature < 0:
            raise pytest.UsageError(f"--temperature must be 0 or more, got {self.temperature:g}")
        for flag, url in (("--api-base", self.api_base), ("--judge-api-base", self.judge_api_base)):
            if url is not None:
                check_base_url(flag, url)
        if self.resume and self.replay is not None:
            raise pytest.UsageError("--resume and --replay exclude each other: --replay sends nothing to resume")
        if self.replay is not None and not self.replay.is_dir():
            raise pytest.UsageError(f"--replay {self.replay}: not a folder of recorded runs")
        from metis_pytest.gates.rules import parse_rule

        for text in self.compare_fail:
            try:
                parse_rule(text)
            except ValueError as exc:
                raise pytest.UsageError(f"--metis-compare-fail {exc}") from None
        if self.compare_path is not None and not (self.compare_path.is_dir() or self.compare_path.is_file()):
            raise pytest.UsageError(f"--metis-compare {self.compare_path}: no such baseline file or folder (to "
                                    "compare with the default baselines, write --metis-compare after the test paths)")
        from metis_pytest.backends import backend_names

        for flag, chosen in (("--backend", self.backend), ("--judge-backend", self.judge_backend)):
            if chosen is not None and chosen not in backend_names():
                raise pytest.UsageError(f"{flag} {chosen!r}: not a registered backend; "
                                        f"known: {', '.join(backend_names())}")


def check_base_url(flag: str, url: str) -> None:
    """An http(s) URL with a host and no query string or fragment, or a UsageError saying what is wrong."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises for a port that is not a number in 0..65535)
    except ValueError as exc:
        raise pytest.UsageError(f"{flag} {url!r}: not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise pytest.UsageError(f"{flag} {url!r}: expected an http:// or https:// URL with a host, "
                                "e.g. http://127.0.0.1:8000/v1")
    if parts.query or parts.fragment:
        raise pytest.UsageError(f"{flag} {url!r}: a base URL takes no query string or fragment "
                                "(requests go to <base>/chat/completions)")


def read_config(config: pytest.Config) -> MetisConfig:
    """Read every option (command line first, then ini) into a :class:`MetisConfig`."""
    values: dict[str, Any] = {}
    for opt in OPTIONS:
        raw = config.getoption(opt.ini)
        if raw is None or raw == []:
            raw = config.getini(opt.ini)
        values[opt.ini.removeprefix("metis_")] = _parse(opt, raw)
    extra = {}
    for _, opt in benchmark_options():
        raw = config.getoption(opt.ini)
        if raw is None or raw == []:
            raw = config.getini(opt.ini)
        extra[opt.ini] = _parse(opt, raw)
    values["extra"] = extra
    models = values.pop("model") or (LOCAL_MODEL,)
    here = Path(config.invocation_params.dir)
    compare = values.pop("compare")  # "" for --metis-compare alone; from the ini, "" means unset
    if config.getoption("metis_compare") is None:
        compare = compare or None
    values["compare"] = compare is not None or bool(values["compare_fail"])
    values["compare_path"] = here / Path(compare).expanduser() if compare else None
    values["baseline_dir"] = config.rootpath / Path(values["baseline_dir"]).expanduser()
    paths = {}
    for name in ("output_dir", "cache_dir", "replay"):
        raw = values.pop(name)
        paths[name] = None if raw is None else (here / Path(raw).expanduser())
    return MetisConfig(models=models, **paths, **values)  # type: ignore[arg-type]
