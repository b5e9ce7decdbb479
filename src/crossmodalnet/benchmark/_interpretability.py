"""Interpretability scores: where a protein's coding gene sits in a genes × proteins attribution table."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from collections.abc import Sequence

logger = logging.getLogger(__name__)

_CALLER = "cmn.benchmark.coding_gene_rank"


def coding_gene_rank(
    scores: pd.DataFrame,
    mapping: Mapping[str, Sequence[str]] | pd.Series | None = None,
) -> pd.DataFrame:
    """Rank of each protein's coding gene in a genes × proteins score table.

    Genes are ranked per protein by absolute score (rank 1 = largest ``|score|``; ties share their
    average rank; a missing score ranks below every present one, so a gene without a score is never
    flattered). A protein with several coding genes (a complex, or paralogues bound by one antibody)
    gets the best rank among those in the table. The median of the ``rank`` column is the summary used
    in the docs' interpretability benchmark: a method that finds the coding gene has a small median.

    Parameters
    ----------
    scores
        Genes × proteins scores, e.g. ``mdata["rna"].varm["cmn_saliency"]`` from
        :func:`crossmodalnet.tl.saliency`, or a baseline such as absolute correlations.
    mapping
        Protein → coding gene names, matched exactly against ``scores.index`` (the ``genes`` column of
        :func:`crossmodalnet.pp.protein_genes` is such a mapping). ``None`` looks the proteins up with
        :func:`crossmodalnet.pp.protein_genes`, matching gene symbols case-insensitively to
        ``scores.index``.

    Returns
    -------
    One row per protein of ``scores`` with at least one coding gene in ``scores.index`` (in the order of
    ``scores.columns``; other proteins are left out and logged), with columns ``rank`` (best rank of
    its coding genes, float), ``gene`` (the best-ranked coding gene), ``n_coding`` (how many of its
    coding genes are in the table) and ``n_genes`` (the length of the ranking).

    Examples
    --------
    >>> ranks = cmn.benchmark.coding_gene_rank(mdata["rna"].varm["cmn_saliency"])
    >>> ranks["rank"].median()
    """
    from crossmodalnet.pp import protein_genes

    if not isinstance(scores, pd.DataFrame):
        raise TypeError(f"{_CALLER}: `scores` must be a genes × proteins DataFrame, got {type(scores).__name__}.")
    if not scores.index.is_unique or not scores.columns.is_unique:
        raise ValueError(f"{_CALLER}: `scores` has duplicated gene or protein names; make them unique first.")
    if mapping is None:
        mapping = protein_genes(scores.columns.astype(str), genes=scores.index.astype(str), errors="ignore")["genes"]
    elif not isinstance(mapping, Mapping | pd.Series):
        raise TypeError(f"{_CALLER}: `mapping` must map protein names to gene names, got {type(mapping).__name__}.")
    values = scores.apply(pd.to_numeric, errors="raise").abs()
    ranks = (-values).rank(axis=0, method="average", na_option="bottom")
    position = {g: i for i, g in enumerate(scores.index)}
    rows, missing = {}, []
    for protein in scores.columns:
        coding = mapping.get(protein, ())
        if isinstance(coding, str):
            coding = (coding,)
        present = [g for g in dict.fromkeys(coding) if g in position]
        if not present:
            missing.append(protein)
            continue
        r = ranks[protein].to_numpy()[[position[g] for g in present]]
        best = int(np.argmin(r))
        rows[protein] = {"rank": float(r[best]), "gene": present[best], "n_coding": len(present)}
    if missing:
        logger.info(
            "%s: %d of %d protein(s) have no coding gene in the table and are left out: %s",
            _CALLER,
            len(missing),
            scores.shape[1],
            missing[:10],
        )
    out = pd.DataFrame.from_dict(rows, orient="index", columns=["rank", "gene", "n_coding"])
    out.index.name = "protein"
    out["n_genes"] = scores.shape[0]
    return out.astype({"rank": float, "gene": str, "n_coding": int, "n_genes": int})
