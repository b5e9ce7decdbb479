"""Registry keys and default names shared across the package."""

from __future__ import annotations

from typing import NamedTuple


class _RegistryKeys(NamedTuple):
    X_KEY: str = "X"
    PROTEIN_KEY: str = "protein"
    TIME_KEY: str = "time"
    BATCH_KEY: str = "batch"
    PROTEIN_MASK_KEY: str = "protein_mask"


REGISTRY_KEYS = _RegistryKeys()

DEFAULT_RNA_KEY = "rna"
DEFAULT_PROTEIN_KEY = "prot"

ALL_CELLS_INCLUDING_TRAINING = "all cells (includes training cells)"
"""``metrics['cells']`` of ``tl.predict_protein`` when the model does not know its training cells."""
NO_TRAINING_CELLS = "all (none used in training)"
"""``metrics['cells']`` of ``tl.predict_protein`` when no scored cell was used in training."""
