"""Align the genes of query data with a trained model's genes."""

from __future__ import annotations

import logging
import re
import warnings
from typing import TYPE_CHECKING

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from crossmodalnet import _keys
from crossmodalnet._constants import DEFAULT_RNA_KEY
from crossmodalnet._docs import docs
from crossmodalnet._utils import get_modality

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mudata import MuData

    from crossmodalnet.model import CrossmodalNet

logger = logging.getLogger(__name__)

_ENSEMBL_VERSION = re.compile(r"^(ENS[A-Z]*\d+)\.\d+$")
_N_SHOWN = 5


def _strip_version(ids: pd.Index) -> pd.Index:
    return pd.Index([_ENSEMBL_VERSION.sub(r"\1", str(i)) for i in ids])


def _model_setup_arg(model: CrossmodalNet, name: str):
    return model.registry_["setup_args"].get(name)


def _model_ids(model: CrossmodalNet, gene_id_column: str, model_gene_ids: Sequence[str] | None) -> pd.Index:
    """IDs of the model's genes, aligned with ``model.gene_names``."""
    genes = pd.Index(model.gene_names)
    if model_gene_ids is not None:
        ids = pd.Index(np.asarray(model_gene_ids).astype(str))
        if len(ids) != len(genes):
            raise ValueError(
                f"`model_gene_ids` has {len(ids)} entries; the model has {len(genes)} genes (`model.gene_names`)."
            )
        return ids
    saved = getattr(model, "gene_ids_", None) or {}
    for column in (gene_id_column, "gene_ids"):
        if column in saved and len(saved[column]) == len(genes):
            return pd.Index(np.asarray(saved[column]).astype(str))
    train = getattr(model, "adata", None)
    rna_key = _model_setup_arg(model, "rna_key")
    if train is None or rna_key not in getattr(train, "mod", {}):
        raise ValueError(
            f"Matching by `gene_id_column={gene_id_column!r}` needs the model's gene IDs, but the model has no "
            f"training data attached and saved no `var[{gene_id_column!r}]` of its genes (it saves the ID columns "
            f"of its RNA `var`: {sorted(saved)}). Pass `model_gene_ids=` (IDs aligned with `model.gene_names`)."
        )
    var = train.mod[rna_key].var
    column = gene_id_column if gene_id_column in var else ("gene_ids" if "gene_ids" in var else None)
    if column is None:
        raise ValueError(
            f"The model's training data has neither `var[{gene_id_column!r}]` nor `var['gene_ids']` in modality "
            f"{rna_key!r}. Pass `model_gene_ids=` (IDs aligned with `model.gene_names`)."
        )
    return pd.Index(var[column].reindex(genes).astype(str).to_numpy())


def match_genes(
    var: pd.DataFrame,
    model: CrossmodalNet,
    *,
    gene_id_column: str | None,
    model_gene_ids: Sequence[str] | None,
    rna_key: str,
    caller: str,
) -> tuple[np.ndarray, dict]:
    """Position of every model gene in ``var`` (-1 if missing) and a coverage record (HDF5-portable)."""
    model_genes = pd.Index(model.gene_names)
    if gene_id_column is None:
        query, reference, match_on = pd.Index(var.index.astype(str)), model_genes, "var_names"
    else:
        if gene_id_column not in var:
            raise KeyError(
                f"{caller}: `gene_id_column={gene_id_column!r}` is not a column of `mdata[{rna_key!r}].var`; "
                f"columns are {list(var.columns)}."
            )
        query = _strip_version(pd.Index(var[gene_id_column].astype(str)))
        reference = _strip_version(_model_ids(model, gene_id_column, model_gene_ids))
        match_on = gene_id_column
    duplicated = query.duplicated()
    ambiguous = pd.Index(query[duplicated].unique()).intersection(reference)
    if len(ambiguous):
        fix = (
            f"make the names unique (`mdata[{rna_key!r}].var_names_make_unique()` then `mdata.update()`, which "
            "keeps the first occurrence's name) or drop the extra columns, or match by a unique ID column with "
            "`gene_id_column=`"
            if gene_id_column is None
            else f"drop the extra columns or deduplicate `var[{gene_id_column!r}]`"
        )
        raise ValueError(
            f"{caller}: {len(ambiguous)} of the model's genes appear more than once in `mdata[{rna_key!r}]` by "
            f"{match_on} (e.g. {[str(n) for n in ambiguous[:_N_SHOWN]]}), so which column feeds the model is "
            f"ambiguous. To choose, {fix}."
        )
    # duplicates of genes the model does not use are dropped with the other unused genes
    first = pd.Index(query[~duplicated])
    positions = np.flatnonzero(~duplicated)
    hit = first.get_indexer(reference)
    idx = np.where(hit >= 0, positions[np.maximum(hit, 0)], -1).astype(np.int64)
    n_matched = int((idx >= 0).sum())
    filled = model_genes[idx < 0]
    info = {
        "coverage": n_matched / len(model_genes),
        "n_model_genes": len(model_genes),
        "n_matched": n_matched,
        "n_filled": len(filled),
        "n_query_genes": int(var.shape[0]),
        "n_unused": int(var.shape[0] - n_matched),
        "match_on": match_on,
        "filled_genes": np.asarray(filled, dtype=str),
    }
    return idx, info


def check_coverage(info: dict, min_coverage: float, *, rna_key: str, caller: str) -> None:
    """Raise below ``min_coverage``; log the coverage; warn about filled genes."""
    if not 0.0 <= min_coverage <= 1.0:
        raise ValueError(f"{caller}: `min_coverage` must be in [0, 1], got {min_coverage}.")
    cov, n, total = info["coverage"], info["n_matched"], info["n_model_genes"]
    if cov < min_coverage:
        hint = (
            "Do the gene names follow another convention (symbols vs Ensembl IDs)? Match by ID with "
            "`gene_id_column=...`."
            if info["match_on"] == "var_names"
            else "Check that the IDs use the same annotation as the model's."
        )
        raise ValueError(
            f"{caller}: only {n} of the model's {total} genes ({cov:.1%}) were found in `mdata[{rna_key!r}]` by "
            f"{info['match_on']}, below `min_coverage={min_coverage}`. {hint} Lower `min_coverage` to accept "
            "predictions from a partly covered model input."
        )
    logger.info(
        "%s: matched %d/%d model genes (%.1f%%) by %s; %d filled with zeros, %d query genes not used by the model",
        caller,
        n,
        total,
        100 * cov,
        info["match_on"],
        info["n_filled"],
        info["n_unused"],
    )
    if info["n_filled"]:
        shown = [str(g) for g in info["filled_genes"][:_N_SHOWN]]
        warnings.warn(
            f"{caller}: {info['n_filled']} of the model's {total} genes are missing from `mdata[{rna_key!r}]` "
            f"(e.g. {shown}) and were filled with zeros, i.e. treated as not expressed "
            f"(coverage {cov:.1%}).",
            UserWarning,
            stacklevel=3,
        )


def align_matrix(X, idx: np.ndarray, *, chunk_size: int = 65536):
    """Columns ``idx`` of ``X`` with zero columns where ``idx == -1`` (keeps sparse input sparse).

    A backed (on-disk) matrix is read in row chunks of ``chunk_size``; the aligned result is in memory.
    """
    n_obs, n_vars = X.shape
    if not (sparse.issparse(X) or isinstance(X, np.ndarray)):
        blocks = [align_matrix(X[start : start + chunk_size], idx) for start in range(0, n_obs, chunk_size)]
        if not blocks:
            return np.zeros((0, len(idx)), dtype=getattr(X, "dtype", np.float32))
        return sparse.vstack(blocks, format="csr") if sparse.issparse(blocks[0]) else np.concatenate(blocks, axis=0)
    cols = np.where(idx >= 0, idx, n_vars)
    if sparse.issparse(X):
        padded = sparse.hstack([X, sparse.csr_matrix((n_obs, 1), dtype=X.dtype)], format="csr")
        return padded[:, cols]
    X = np.asarray(X)
    padded = np.concatenate([X, np.zeros((n_obs, 1), dtype=X.dtype)], axis=1)
    return padded[:, cols]


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
    slots = [None, *rna.layers.keys()] if layers is None else list(layers)
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
    import mudata as md

    caller = "cmn.pp.harmonize_genes"
    keys = _keys.Keys(key_added)
    rna = get_modality(mdata, rna_key, caller, role="RNA")
    idx, info = match_genes(
        rna.var, model, gene_id_column=gene_id_column, model_gene_ids=model_gene_ids, rna_key=rna_key, caller=caller
    )
    check_coverage(info, min_coverage, rna_key=rna_key, caller=caller)
    info["min_coverage"] = float(min_coverage)
    if copy:
        mdata = mdata.copy()
    new = align_anndata(mdata.mod[rna_key], idx, pd.Index(model.gene_names))
    with md.set_options(pull_on_update=False):
        mdata.mod[rna_key] = new
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
