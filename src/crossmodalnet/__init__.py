"""Predict CITE-seq surface-protein abundance from scRNA-seq with CrossmodalNet."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from . import datasets, pl, pp, tl
from ._settings import settings

if TYPE_CHECKING:
    from . import model

try:
    __version__ = version("crossmodalnet-tools")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["datasets", "model", "pl", "pp", "settings", "tl", "__version__"]


def __getattr__(name: str):
    # `model` pulls in scvi-tools and Lightning, which are slow to import; load it only when asked for.
    if name == "model":
        import importlib

        return importlib.import_module(".model", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
