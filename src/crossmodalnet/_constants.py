"""Registry keys and default names shared across the package."""

from __future__ import annotations

from typing import NamedTuple


class _RegistryKeys(NamedTuple):
    X_KEY: str = "X"
    PROTEIN_KEY: str = "protein"
    TIME_KEY: str = "time"
    BATCH_KEY: str = "batch"


REGISTRY_KEYS = _RegistryKeys()

DEFAULT_RNA_KEY = "rna"
DEFAULT_PROTEIN_KEY = "prot"
