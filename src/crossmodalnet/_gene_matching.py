"""Matching a query's genes to a model's genes, and aligning matrices to them (pure, model-free helpers)."""

from __future__ import annotations

import logging
import re
import warnings

import numpy as np
import pandas as pd
from scipy import sparse

logger = logging.getLogger(__name__)

_ENSEMBL_VERSION = re.compile(r"^(ENS[A-Z]*\d+)\.\d+$")
_N_SHOWN = 5


def strip_version(ids: pd.Index) -> pd.Index:
    """Ensembl IDs without their version suffix (``ENSG00000141510.17`` → ``ENSG00000141510``)."""
    return pd.Index([_ENSEMBL_VERSION.sub(r"\1", str(i)) for i in ids])


def match_names(
    query: pd.Index,
    reference: pd.Index,
    model_genes: pd.Index,
    *,
    gene_id_column: str | None,
    rna_key: str,
    caller: str,
) -> tuple[np.ndarray, dict]:
    """Position of every reference gene in ``query`` (-1 if missing) and a coverage record (HDF5-portable).

    Parameters
    ----------
    query
        Names or IDs of the query's genes (its ``var`` rows).
    reference
        Names or IDs of the model's genes, in model order.
    model_genes
        The model's gene names (for the record of filled genes).
    gene_id_column
        The ``var`` column matched on, ``None`` for ``var_names`` (for messages and the record).
    rna_key
        The query's RNA modality (for messages).
    caller
        Name shown in error messages.

    Returns
    -------
    The positions, and the record (``coverage``, ``n_model_genes``, ``n_matched``, ``n_filled``,
    ``n_query_genes``, ``n_unused``, ``match_on``, ``filled_genes``).
    """
    match_on = "var_names" if gene_id_column is None else gene_id_column
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
        "n_query_genes": len(query),
        "n_unused": len(query) - n_matched,
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


class AlignedRows:
    """Rows of a matrix with the columns ``idx`` (zeros where ``idx == -1``), aligned when read.

    The lazy form of :func:`align_matrix`: reading ``rows`` reads only those rows of ``X`` (dense,
    sparse, backed or a row reader such as :class:`crossmodalnet._utils.NormalizedRows`), so an
    on-disk matrix with other genes is matched chunk by chunk and never copied whole.
    """

    def __init__(self, X, idx: np.ndarray):
        self.X = X
        self.idx = np.asarray(idx, dtype=np.int64)
        self.shape = (X.shape[0], self.idx.size)

    def __getitem__(self, rows):
        block = self.X[rows]
        if not sparse.issparse(block):
            block = np.asarray(block)
        return align_matrix(block, self.idx)
