"""Modality lookup and input validation shared across the package (no torch import)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData


def get_modality(mdata: MuData, key: str, caller: str, *, role: str = "") -> AnnData:
    """Return ``mdata[key]`` or raise a :class:`KeyError` that lists the modalities present."""
    if key not in mdata.mod:
        what = f"{role} modality" if role else "modality"
        raise KeyError(
            f"{caller}: no {what} {key!r} in the MuData; modalities are {list(mdata.mod)}. "
            f"Pass the right name (e.g. `{'protein_key' if role == 'protein' else 'rna_key'}=...`)."
        )
    return mdata.mod[key]


def get_layer(adata: AnnData, layer: str | None, mod_key: str = ""):
    """Return ``adata.layers[layer]`` (``adata.X`` for ``None``) or raise a :class:`KeyError`."""
    if layer is None:
        if adata.X is None:
            raise KeyError(f"Modality {mod_key!r} has no `.X`; pass the layer holding the data.")
        return adata.X
    if layer not in adata.layers:
        raise KeyError(f"Modality {mod_key!r} has no layer {layer!r}; layers are {list(adata.layers)}.")
    return adata.layers[layer]


def check_finite(X, where: str, layer: str | None = None) -> None:
    """Raise a :class:`ValueError` if a dense or sparse matrix holds NaN or infinite values."""
    if getattr(X, "dtype", None) is None or not np.issubdtype(X.dtype, np.number):
        return
    values = X.data if sparse.issparse(X) else np.asarray(X)
    if not np.isfinite(values).all():
        n = int((~np.isfinite(values)).sum())
        slot = f"layer {layer!r}" if layer else "`.X`"
        raise ValueError(f"{where} {slot} has {n} NaN or infinite value(s); remove or impute them first.")
