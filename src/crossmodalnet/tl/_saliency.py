"""Write gene × protein saliency (the paper's gene-protein relationship scores) into a MuData."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from crossmodalnet import _keys
from crossmodalnet._constants import DEFAULT_RNA_KEY
from crossmodalnet._docs import docs
from crossmodalnet._utils import obs_mask, select_names

from ._utils import check_model, log_added, model_info, model_input, portable

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mudata import MuData

    from crossmodalnet.model import CrossmodalNet

logger = logging.getLogger(__name__)

_CALLER = "cmn.tl.saliency"
_N_LOGGED_PROTEINS = 5
_N_LOGGED_GENES = 3


def top_genes(scores: pd.Series, n: int) -> np.ndarray:
    """The ``n`` genes with the largest absolute score (NaN scores excluded), strongest first."""
    s = scores.dropna()
    order = np.argsort(-np.abs(s.to_numpy()), kind="stable")
    return np.asarray(s.index[order[:n]], dtype=str)


@docs.dedent
def saliency(
    mdata: MuData,
    model: CrossmodalNet,
    *,
    proteins: str | Sequence[str] | None = None,
    method: Literal["gradient", "gradient_x_sd", "gradient_x_input", "integrated_gradients", "smoothgrad"] = "gradient",
    aggregate: Literal["sum", "mean", "abs_sum", "abs_mean"] = "sum",
    baseline: Literal["zeros", "mean"] | None = None,
    mask_obs: str | Sequence[bool] | np.ndarray | None = None,
    time: object = None,
    n_steps: int = 50,
    n_samples: int = 20,
    noise_scale: float = 0.15,
    random_state: int = 0,
    n_top: int = 20,
    rna_key: str = DEFAULT_RNA_KEY,
    gene_id_column: str | None = None,
    model_gene_ids: Sequence[str] | None = None,
    min_coverage: float = 0.5,
    batch_size: int = 256,
    key_added: str = _keys.SALIENCY,
    copy: bool = False,
) -> MuData | None:
    r"""Score every gene's influence on each predicted protein with saliency maps :cite:p:`Simonyan2013,Yang2023`.

    ``method="gradient"`` is the paper's :math:`\gamma_j = \sum_i \partial \hat y_i(j) / \partial x_i`,
    summed over the chosen cells. The other methods rescale or replace each cell's gradient:
    ``"gradient_x_sd"`` multiplies it by the gene's standard deviation over the training cells
    (standardised-gene units), ``"gradient_x_input"`` by the cell's expression minus a baseline,
    ``"integrated_gradients"`` integrates it from a baseline (all-zero expression or the mean training
    cell) :cite:p:`Sundararajan2017`, and ``"smoothgrad"`` averages ``"gradient_x_sd"`` over noisy
    copies of each cell :cite:p:`Smilkov2017`. The formulas are in
    :meth:`~crossmodalnet.model.CrossmodalNet.get_saliency`, which computes the scores, batched over
    cells with one backward pass per batch for all proteins.

    Parameters
    ----------
    %(mdata_query)s
    %(model)s
    %(proteins)s
    method
        ``"gradient"`` (the paper's saliency), ``"gradient_x_sd"``, ``"gradient_x_input"``,
        ``"integrated_gradients"`` or ``"smoothgrad"``.
    aggregate
        How per-cell attributions are combined over cells: ``"sum"`` (the paper's :math:`\gamma_j`,
        signed: positive for genes that raise the protein), ``"mean"`` (the sum divided by the number
        of cells, comparable between cell subsets), ``"abs_sum"`` and ``"abs_mean"`` (of magnitudes,
        so opposite effects in different cells do not cancel). Use an ``abs`` aggregate with
        ``baseline="mean"``: attributions relative to the mean cell cancel in a signed sum.
    baseline
        Reference expression of ``"gradient_x_input"`` and ``"integrated_gradients"``: ``"zeros"``
        (default) or ``"mean"`` (the mean training cell). Other methods take no baseline.
    mask_obs
        Cells to aggregate over: a boolean array aligned with ``mdata.obs_names`` or the name of a
        boolean column of ``mdata.obs`` (e.g. one time point or cell type); all cells by default.
    %(saliency_settings)s
    n_top
        Number of top genes per protein to list in ``.uns[key_added]['top_genes']``.
    %(rna_key)s
    %(harmonize)s
    batch_size
        Cells per backward pass; memory grows with ``batch_size × n_genes × n_proteins``.
    %(key_added)s
    %(copy)s

    Returns
    -------
    ``None``, or a copy if ``copy=True``. Sets:

    ``mdata[rna_key].varm[key_added]``
        :class:`~pandas.DataFrame`, genes × proteins, indexed by ``mdata[rna_key].var_names``; NaN for
        genes the model does not use. Genes rank by the magnitude of their score; the sign of a
        signed aggregate gives the direction.
    ``mdata.uns[key_added]``
        ``method``, ``aggregate``, ``baseline`` (``"zeros"`` or ``"mean"``; ``"gradient_x_input"`` and
        ``"integrated_gradients"`` only), ``n_steps`` (integrated gradients only), ``n_samples``,
        ``noise_scale`` and ``random_state`` (SmoothGrad only), ``n_cells`` (cells aggregated), ``top_genes`` (protein → the ``n_top`` genes of largest
        absolute score, strongest first), ``params``, ``model``, ``protein_names`` (the proteins scored)
        and ``coverage``.

    Examples
    --------
    >>> cmn.tl.saliency(mdata, model, proteins=["CD38"])
    >>> mdata["rna"].varm["cmn_saliency"]["CD38"].abs().nlargest(10)
    >>> cmn.pl.saliency_ranking(mdata, proteins="CD38")
    """
    keys = _keys.Keys(key_added)
    model = check_model(model, _CALLER)
    names = select_names(proteins, model.protein_names, "protein(s)", _CALLER)
    if n_top < 1:
        raise ValueError(f"{_CALLER}: `n_top` must be at least 1, got {n_top}.")
    mask = obs_mask(mdata, mask_obs, "mask_obs", _CALLER)
    inp = model_input(
        mdata,
        model,
        rna_key=rna_key,
        gene_id_column=gene_id_column,
        model_gene_ids=model_gene_ids,
        min_coverage=min_coverage,
        caller=_CALLER,
    )
    indices = None
    if mask is not None:
        pos = inp.mdata.obs_names.get_indexer(mdata.obs_names[mask])
        indices = np.sort(pos[pos >= 0])
        if indices.size == 0:
            raise ValueError(f"{_CALLER}: no cell selected by `mask_obs` has RNA.")
    scores = model.get_saliency(
        inp.mdata,
        proteins=names,
        method=method,
        aggregate=aggregate,
        baseline=baseline,
        indices=indices,
        time=time,
        n_steps=n_steps,
        n_samples=n_samples,
        noise_scale=noise_scale,
        random_state=random_state,
        batch_size=batch_size,
    )
    rna = mdata.mod[rna_key]
    table = np.full((rna.n_vars, len(names)), np.nan)
    found = inp.gene_index >= 0
    table[inp.gene_index[found]] = scores.to_numpy()[found]
    table = pd.DataFrame(table, index=rna.var_names.copy(), columns=pd.Index(names))

    selected = inp.mdata.obs_names if indices is None else inp.mdata.obs_names[indices]
    n_cells = int(selected.isin(inp.mdata.mod[model.get_setup_arg("rna_key")].obs_names).sum())
    tops = {p: top_genes(table[p], n_top) for p in names}
    meta = {
        "method": method,
        "aggregate": aggregate,
        "n_cells": n_cells,
        "top_genes": tops,
        "params": {
            "proteins": names,
            "method": method,
            "aggregate": aggregate,
            "baseline": baseline,
            "mask_obs": mask_obs,
            "time": time,
            "n_steps": n_steps,
            "n_samples": n_samples,
            "noise_scale": noise_scale,
            "random_state": random_state,
            "n_top": n_top,
            "rna_key": rna_key,
            "gene_id_column": gene_id_column,
            "min_coverage": min_coverage,
            "batch_size": batch_size,
            "key_added": key_added,
        },
        "model": model_info(model),
        "protein_names": names,
        "coverage": inp.coverage,
        "genes": inp.genes,
    }
    if method in ("gradient_x_input", "integrated_gradients"):
        meta["baseline"] = baseline or "zeros"
    if method == "integrated_gradients":
        meta["n_steps"] = n_steps
    if method == "smoothgrad":
        meta |= {"n_samples": n_samples, "noise_scale": noise_scale, "random_state": random_state}
    if copy:
        mdata = mdata.copy()
    mdata.mod[rna_key].varm[keys.varm] = table
    mdata.uns[keys.uns] = portable(meta)
    log_added(
        _CALLER,
        [
            f"mdata[{rna_key!r}].varm[{keys.varm!r}] ({table.shape[0]} genes × {table.shape[1]} proteins)",
            f"mdata.uns[{keys.uns!r}]",
        ],
    )
    # each gene with its signed score: with a signed aggregate, a negative score lowers the protein
    shown = "; ".join(
        f"{p}: " + ", ".join(f"{g} ({table.at[g, p]:+.3g})" for g in tops[p][:_N_LOGGED_GENES])
        for p in names[:_N_LOGGED_PROTEINS]
    )
    logger.info("%s: top genes (%s over %d cells, %s) %s", _CALLER, method, n_cells, aggregate, shown)
    return mdata if copy else None
