"""The shared return path of every plot, and small helpers to read stored results."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse

from crossmodalnet import _keys
from crossmodalnet._constants import DEFAULT_PROTEIN_KEY
from crossmodalnet._utils import select_names

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd
    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from mudata import MuData


def get_uns(mdata: MuData, key: str, creator: str, caller: str) -> Mapping:
    """``mdata.uns[key]``, or a :class:`KeyError` naming the function that creates it."""
    value = mdata.uns.get(key)
    if not isinstance(value, Mapping):
        raise KeyError(f"{caller}: no `mdata.uns[{key!r}]`; run `{creator}` first (or pass its `key_added` as `key`).")
    return value


def saliency_table(mdata: MuData, key: str, rna_key: str, caller: str):
    """``mdata[rna_key].varm[key]`` (genes × proteins), or a :class:`KeyError` naming ``cmn.tl.saliency``."""
    keys = _keys.Keys(key)
    if rna_key not in mdata.mod or keys.varm not in mdata.mod[rna_key].varm:
        raise KeyError(f"{caller}: no `mdata[{rna_key!r}].varm[{keys.varm!r}]`; run `cmn.tl.saliency` first.")
    return mdata.mod[rna_key].varm[keys.varm]


def grid(
    n: int,
    *,
    ax: Axes | None,
    ncols: int,
    panel_size: tuple[float, float],
    caller: str,
) -> tuple[Figure, list[Axes]]:
    """A figure with ``n`` panels on a grid, or ``ax`` itself when one panel is wanted."""
    import matplotlib.pyplot as plt

    if ax is not None:
        if n != 1:
            raise ValueError(f"{caller}: `ax` holds one panel, but {n} were requested; select one or pass `ax=None`.")
        return ax.figure, [ax]
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows), squeeze=False, layout="constrained"
    )
    flat = list(axes.ravel())
    for extra in flat[n:]:
        extra.remove()
    return fig, flat[:n]


def finish(
    fig: Figure,
    *,
    ax: Axes | None,
    show: bool | None,
    save: str | Path | None,
    return_fig: bool,
) -> Figure | None:
    """Save, show and return a plot as every ``cmn.pl`` function does (decoupler's ``_return`` idea).

    ``save`` is an explicit path whose extension picks the format. The figure is returned with
    ``return_fig=True``; otherwise it is shown unless ``show=False`` or an ``ax`` was passed.
    """
    import matplotlib.pyplot as plt

    if save is not None:
        fig.savefig(save, bbox_inches="tight")
    if return_fig:
        return fig
    if show if show is not None else ax is None:
        plt.show()
    return None


def observed_proteins(
    mdata: MuData,
    predicted: pd.Index,
    meta: Mapping,
    *,
    protein_key: str | None,
    layer: str | None,
    proteins: object,
    caller: str,
) -> tuple[AnnData, str | None, list[str]]:
    """The observed protein modality, its layer and the selected predicted proteins that have observations.

    ``protein_key`` and ``layer`` default to what :func:`crossmodalnet.tl.predict_protein` recorded in
    ``meta``; a missing modality or layer is a :class:`KeyError` naming it.
    """
    protein_key = protein_key or str(meta.get("params", {}).get("protein_key", DEFAULT_PROTEIN_KEY))
    if layer is None:
        layer = meta.get("model", {}).get("protein_layer")
    if protein_key not in mdata.mod:
        raise KeyError(f"{caller}: no observed proteins: `mdata` has no modality {protein_key!r}.")
    prot = mdata.mod[protein_key]
    if layer is not None and layer not in prot.layers:
        raise KeyError(f"{caller}: `mdata[{protein_key!r}]` has no layer {layer!r}.")
    observed = [p for p in predicted if p in set(prot.var_names)]
    return prot, layer, select_names(proteins, observed, "protein(s) with observations", caller)


def observed_values(prot: AnnData, layer: str | None, cells: pd.Index, proteins: list[str]) -> np.ndarray:
    """Dense float array (cells × proteins) of the observed values of ``prot`` (``layer`` or ``X``)."""
    X = prot.X if layer is None else prot.layers[layer]
    X = X[prot.obs_names.get_indexer(cells)][:, prot.var_names.get_indexer(proteins)]
    return (X.toarray() if sparse.issparse(X) else np.asarray(X)).astype(float)
