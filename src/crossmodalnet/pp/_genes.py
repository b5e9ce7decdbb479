"""Align the genes of query data with a trained model's genes."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anndata as ad
import numpy as np
import pandas as pd

from crossmodalnet import _keys
from crossmodalnet._constants import DEFAULT_RNA_KEY
from crossmodalnet._docs import docs
from crossmodalnet._gene_matching import align_matrix, check_coverage
from crossmodalnet._utils import get_modality, layer_names, shared_feature_names_quiet

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mudata import MuData

    from crossmodalnet.model import CrossmodalNet

logger = logging.getLogger(__name__)


def _align_var(var: pd.DataFrame, idx: np.ndarray, model_genes: pd.Index) -> pd.DataFrame:
    """Rows of ``var`` in model-gene order; missing genes get NaN, ``False`` or ``""`` by column type."""
    missing = idx < 0
    out = var.iloc[np.maximum(idx, 0)].copy() if len(var) else pd.DataFrame(index=range(len(idx)))
    out.index = pd.Index(model_genes, name=var.index.name)
    for col in list(out.columns):
        values = out[col]
        if pd.api.types.is_bool_dtype(values.dtype):
            out[col] = values.to_numpy(dtype=bool) & ~missing
        elif pd.api.types.is_numeric_dtype(values.dtype):
            out[col] = np.where(missing, np.nan, values.to_numpy(dtype=float))
        else:
            out[col] = np.where(missing, "", values.astype(str).to_numpy())
    return out


def _align_varm(varm, idx: np.ndarray, model_genes: pd.Index) -> dict:
    """Gene-aligned ``varm`` entries in model-gene order, NaN rows for missing genes (dense entries only)."""
    missing = idx < 0
    out = {}
    for key, value in varm.items():
        if isinstance(value, pd.DataFrame):
            aligned = value.iloc[np.maximum(idx, 0)].astype(float, errors="ignore").copy()
            aligned.index = pd.Index(model_genes)
            aligned.iloc[missing] = np.nan
        elif isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.number):
            aligned = value[np.maximum(idx, 0)].astype(float)
            aligned[missing] = np.nan
        else:
            logger.info("dropped varm[%r] (%s), which cannot be reindexed to the model's genes", key, type(value))
            continue
        out[key] = aligned
    return out


def align_anndata(
    rna: ad.AnnData, idx: np.ndarray, model_genes: pd.Index, *, layers: Sequence[str | None] | None = None
) -> ad.AnnData:
    """New AnnData over the cells of ``rna`` with exactly ``model_genes``.

    ``layers=None`` aligns ``.X``, every layer and the dense ``varm`` entries (NaN rows for missing
    genes) and keeps ``obs``, ``obsm``, ``obsp`` and ``uns``; ``varp`` is dropped. Otherwise only the
    listed slots (``None`` = ``.X``) over bare ``obs``/``var``.
    """
    slots = [None, *layer_names(rna)] if layers is None else list(layers)
    if layers is None and len(rna.varp):
        logger.info("dropped varp %s, which is not reindexed to the model's genes", list(rna.varp))
    X = align_matrix(rna.X, idx) if None in slots and rna.X is not None else None
    new_layers = {name: align_matrix(rna.layers[name], idx) for name in slots if name is not None}
    return ad.AnnData(
        X=X,
        obs=rna.obs.copy(),
        var=_align_var(rna.var, idx, model_genes),
        uns=dict(rna.uns) if layers is None else None,
        obsm=dict(rna.obsm.items()) if layers is None else None,
        obsp=dict(rna.obsp.items()) if layers is None else None,
        layers=new_layers,
        varm=_align_varm(rna.varm, idx, model_genes) if layers is None else None,
    )


@docs.dedent
def harmonize_genes(
    mdata: MuData,
    model: CrossmodalNet,
    *,
    rna_key: str = DEFAULT_RNA_KEY,
    gene_id_column: str | None = None,
    model_gene_ids: Sequence[str] | None = None,
    min_coverage: float = 0.5,
    key_added: str = _keys.HARMONIZE,
    copy: bool = False,
) -> MuData | None:
    """Give the RNA modality exactly the model's genes, in the model's order.

    Query data rarely has the same genes as the data a model was trained on. Genes are matched by
    name, or by an ID column such as Ensembl IDs; genes the model does not use are dropped (and
    counted); model genes missing from the query are filled with zeros, which on the
    log-normalised scale means "not expressed", with a :class:`UserWarning`. Coverage (matched /
    model genes) is logged and recorded. Below ``min_coverage``, or if a model gene appears more
    than once in the query, nothing is changed and a :class:`ValueError` explains the likely fix.

    :func:`crossmodalnet.tl.predict_protein` and the other :mod:`crossmodalnet.tl` functions do
    this on the fly (without changing your data); call this function to inspect or keep the
    harmonised matrix.

    Parameters
    ----------
    %(mdata)s
    %(model)s Only its gene names (and, with ``gene_id_column``, its gene IDs) are used.
    %(rna_key)s
    %(harmonize)s
    %(key_added)s
    %(copy)s

    Returns
    -------
    ``None``, or the harmonised copy if ``copy=True``. Sets:

    ``mdata.mod[rna_key]``
        A new AnnData over the same cells with the model's genes as ``var_names``: ``.X`` and every
        layer are reindexed (zeros for missing genes); ``var`` columns are carried over (``NaN``,
        ``False`` or ``""`` for missing genes), and so are dense ``varm`` entries (e.g. saliency,
        NaN rows for missing genes); ``varp`` is dropped.
    ``mdata.uns[key_added]``
        ``coverage`` (float), ``n_model_genes``, ``n_matched``, ``n_filled``, ``n_query_genes``,
        ``n_unused`` (query genes the model does not use), ``match_on`` and ``filled_genes``.

    Notes
    -----
    Normalise the query before harmonising, so library sizes come from all of its genes, and use
    the same normalisation as the training data.

    Examples
    --------
    >>> query = cmn.pp.to_mudata(rna_only_adata)
    >>> cmn.pp.harmonize_genes(query, model, gene_id_column="gene_ids")
    >>> query.uns["cmn_harmonize"]["coverage"]
    """
    caller = "cmn.pp.harmonize_genes"
    keys = _keys.Keys(key_added)
    rna = get_modality(mdata, rna_key, caller, role="RNA")
    idx, info = model._match_query_genes(
        rna.var, gene_id_column=gene_id_column, model_gene_ids=model_gene_ids, rna_key=rna_key, caller=caller
    )
    check_coverage(info, min_coverage, rna_key=rna_key, caller=caller)
    info["min_coverage"] = float(min_coverage)
    if copy:
        mdata = mdata.copy()
    new = align_anndata(mdata.mod[rna_key], idx, pd.Index(model.gene_names))
    mdata.mod[rna_key] = new
    with shared_feature_names_quiet():
        mdata.update()
    mdata.uns[keys.uns] = info
    logger.info(
        "added mdata[%r] with the model's %d genes (replacing %d), mdata.uns[%r]",
        rna_key,
        info["n_model_genes"],
        info["n_query_genes"],
        keys.uns,
    )
    return mdata if copy else None
