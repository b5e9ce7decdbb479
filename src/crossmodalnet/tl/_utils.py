"""Helpers of the :mod:`crossmodalnet.tl` writers: model input, metadata, HDF5-portable ``.uns`` values.

Nothing here imports torch at import time; the model class is imported inside the functions that
need it, so ``import crossmodalnet`` stays light.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from crossmodalnet._gene_matching import align_matrix, check_coverage
from crossmodalnet._utils import NormalizedRows, get_layer, get_modality, query_normalization, resolve_obs_column

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mudata import MuData

    from crossmodalnet._streaming import RnaInput
    from crossmodalnet.model import CrossmodalNet

logger = logging.getLogger(__name__)


def portable(value):
    """``value`` as something anndata writes to HDF5 and reads back: str, numbers, bool, arrays, nested dicts.

    ``None`` values are dropped from dicts; sequences become arrays; unknown objects become their ``str``.
    """
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if v is None:
                continue
            key = str(k)
            if "/" in key:
                warnings.warn(
                    f"Key {key!r} contains '/', which HDF5 turns into nested groups; it will not round-trip "
                    "through `write_h5mu`. Rename it.",
                    UserWarning,
                    stacklevel=3,
                )
            out[key] = portable(v)
        return out
    if isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.ndarray):
        return value.astype(str) if value.dtype == object else value
    if isinstance(value, pd.Index | pd.Series):
        return portable(value.to_numpy())
    if isinstance(value, list | tuple):
        items = [portable(v) for v in value if v is not None]
        if all(isinstance(v, str) for v in items):
            return np.asarray(items, dtype=str)
        if all(isinstance(v, bool | int | float) for v in items):
            return np.asarray(items)
        return {str(i): v for i, v in enumerate(items)}
    return str(value)


def check_model(model: object, caller: str) -> CrossmodalNet:
    """Return ``model`` if it is a trained :class:`~crossmodalnet.model.CrossmodalNet`."""
    from crossmodalnet.model import CrossmodalNet

    if not isinstance(model, CrossmodalNet):
        raise TypeError(f"{caller}: `model` must be a trained `cmn.model.CrossmodalNet`, got {type(model).__name__}.")
    if not model.is_trained_:
        raise ValueError(f"{caller}: the model is not trained yet; call `model.train()` first.")
    return model


def model_info(model: CrossmodalNet) -> dict:
    """The ``model`` record of ``.uns[key_added]``: class, version, sizes and registered keys (no ``None``)."""
    from crossmodalnet import __version__

    history = getattr(model, "history", None) or {}
    n_epochs = max((len(v) for v in history.values()), default=None)
    info = {
        "class": type(model).__name__,
        "cmn_version": __version__,
        "n_latent": int(model.module.n_latent),
        "n_genes": len(model.gene_names),
        "n_proteins": len(model.protein_names),
        "n_epochs": n_epochs,
    }
    for name in ("rna_key", "protein_key", "rna_layer", "protein_layer", "time_key", "batch_key"):
        info[name] = model.get_setup_arg(name)
    return portable(info)


@dataclass(frozen=True)
class ModelInput:
    """What the model's getters are called on, and how it maps back to the user's MuData."""

    mdata: MuData
    """MuData the model can read: the user's own, or a temporary one with the model's genes."""
    coverage: float
    """Matched / model genes."""
    genes: dict | None
    """Harmonisation record (see :func:`crossmodalnet.pp.harmonize_genes`), ``None`` if not needed."""
    gene_index: np.ndarray
    """Position of every model gene in the user's RNA ``var`` (-1 if filled)."""
    rna: RnaInput | None = None
    """With ``lazy=True``: the user's RNA matrix, matched and normalised row block by row block as it is read
    (``mdata`` is then the user's own MuData); ``None`` when ``mdata`` holds the model input."""


def model_input(
    mdata: MuData,
    model: CrossmodalNet,
    *,
    rna_key: str,
    gene_id_column: str | None,
    model_gene_ids: Sequence[str] | None,
    min_coverage: float,
    caller: str,
    lazy: bool = False,
) -> ModelInput:
    """The user's MuData if the model can read it as it is, else a temporary MuData with the model's genes.

    The temporary MuData shares nothing writable with the user's: its RNA modality holds the model's
    genes (matched as in :func:`crossmodalnet.pp.harmonize_genes`) from the model's layer, and its
    ``obs`` the model's time and batch columns. With ``lazy``, no matrix is built: genes are matched (and
    raw counts normalised) block by block as the rows are read (``ModelInput.rna``), so a backed or dask
    matrix with other genes is streamed.
    """
    import anndata as ad
    import mudata as md

    rna = get_modality(mdata, rna_key, caller, role="RNA")
    model_key, layer = model.get_setup_arg("rna_key"), model.get_setup_arg("rna_layer")
    genes = pd.Index(model.gene_names)
    X = get_layer(rna, layer, rna_key)
    if rna_key == model_key and pd.Index(rna.var_names.astype(str)).equals(genes) and gene_id_column is None:
        return ModelInput(mdata, 1.0, None, np.arange(len(genes)))
    idx, info = model._match_query_genes(
        rna.var, gene_id_column=gene_id_column, model_gene_ids=model_gene_ids, rna_key=rna_key, caller=caller
    )
    check_coverage(info, min_coverage, rna_key=rna_key, caller=caller)
    # raw counts: normalised over all the query's genes, as `cmn.pp.log_normalize` would, before matching
    where = f"mdata[{rna_key!r}]" + (f".layers[{layer!r}]" if layer else ".X")
    target_sum = query_normalization(X, model.rna_normalization, where, caller)
    if lazy:
        from crossmodalnet._streaming import RnaInput

        rows = rna.obs_names.get_indexer(mdata.obs_names)
        return ModelInput(mdata, float(info["coverage"]), info, idx, RnaInput(X, rows, idx, target_sum))
    aligned = align_matrix(X if target_sum is None else NormalizedRows(X, target_sum), idx)
    adata = ad.AnnData(
        X=aligned if layer is None else None,
        obs=pd.DataFrame(index=rna.obs_names.copy()),
        var=pd.DataFrame(index=genes.copy()),
        layers=None if layer is None else {layer: aligned},
    )
    tmp = md.MuData({model_key: adata})
    for col in (model.get_setup_arg("time_key"), model.get_setup_arg("batch_key")):
        found = None if col is None else resolve_obs_column(mdata, col)
        if found is not None:
            tmp.obs[col] = mdata.obs[found].reindex(tmp.obs_names)
    return ModelInput(tmp, float(info["coverage"]), info, idx)


def log_added(caller: str, slots: Sequence[str]) -> None:
    """The one "added ..." log line of a writer."""
    logger.info("%s: added %s", caller, ", ".join(slots))
