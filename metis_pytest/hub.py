"""The Hugging Face Hub, for loaders that fetch a benchmark from it (``--dataset hf``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from metis_pytest.errors import DatasetError

HF_INSTALL_HINT = "pip install 'metis-pytest[hf]'"


def hf_load_dataset(dataset_id: str, error: type[DatasetError] = DatasetError) -> Callable[..., Any]:
    """Hugging Face's ``datasets.load_dataset``, or ``error`` naming the install hint when it is not there.

    Also reached when ``import datasets`` finds the repository's own ``datasets/`` data folder (a
    namespace package, because Hugging Face's library is not installed)."""
    import importlib

    try:
        hf_datasets: Any = importlib.import_module("datasets")
    except ImportError:
        hf_datasets = None
    load_dataset = getattr(hf_datasets, "load_dataset", None)
    if load_dataset is None:
        raise error(f"Loading {dataset_id} from the Hugging Face Hub needs the `datasets` library: {HF_INSTALL_HINT}")
    return load_dataset  # type: ignore[no-any-return]
