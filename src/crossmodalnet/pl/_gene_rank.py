"""Where named genes sit in a protein's saliency ranking (paper Fig. 2d)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from crossmodalnet import _keys
from crossmodalnet._docs import docs
from crossmodalnet._utils import select_names
from crossmodalnet.pp import protein_genes

from ._utils import finish, get_uns, grid, saliency_table

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from mudata import MuData

_CALLER = "cmn.pl.gene_rank"


@docs.dedent
def gene_rank(
    mdata: MuData,
    *,
    protein: str,
    genes: str | Sequence[str] | None = None,
    coding_genes: bool = True,
    key: str = _keys.SALIENCY,
    rna_key: str = "rna",
    log_x: bool = False,
    color: str = "0.5",
    highlight: str = "C3",
    coding_highlight: str = "C0",
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    return_fig: bool = False,
) -> Figure | None:
    """Plot the whole saliency ranking of a protein and mark where the named genes sit.

    Genes are ranked by absolute saliency (rank 1 = strongest) from ``mdata[rna_key].varm[key]``
    (:func:`crossmodalnet.tl.saliency`); each named gene is labelled with its rank. The gene(s) coding
    for the protein, looked up with :func:`crossmodalnet.pp.protein_genes` (gene symbols matched
    case-insensitively, so mouse genes such as ``Cd19`` are found for ``CD19``), are marked as well when
    they are in the ranking: a saliency that explains the protein should rank them near the top.

    Parameters
    ----------
    %(mdata_plot)s
    protein
        Protein whose ranking is drawn.
    genes
        Gene or genes to mark.
    coding_genes
        Also mark the protein's coding gene(s) that are in the ranking, labelled "coding". Proteins
        the map does not know (or without a coding gene, such as isotype controls) mark nothing.
    key
        ``key_added`` of :func:`crossmodalnet.tl.saliency`.
    %(rna_key)s
    log_x
        Logarithmic rank axis (for long rankings).
    color
        Colour of the ranking curve.
    highlight
        Colour of the genes named in ``genes``.
    coding_highlight
        Colour of the coding genes.
    %(plot_tail)s

    Returns
    -------
    %(plot_returns)s
    """
    get_uns(mdata, key, "cmn.tl.saliency", _CALLER)
    table = saliency_table(mdata, key, rna_key, _CALLER)
    if not isinstance(protein, str):
        raise TypeError(f"{_CALLER}: `protein` must be one protein name, got {protein!r}.")
    select_names(protein, table.columns, "protein", _CALLER)
    scores = table[protein].dropna().abs().sort_values(ascending=False, kind="stable")
    named = [] if genes is None else select_names(genes, scores.index, "gene(s) with a score", _CALLER)
    coding = []
    if coding_genes:
        coding = list(protein_genes([protein], genes=scores.index.astype(str), errors="ignore")["genes"].iloc[0])
    fig, (a,) = grid(1, ax=ax, ncols=1, panel_size=(5.0, 3.5), caller=_CALLER)
    x = np.arange(1, len(scores) + 1)
    a.plot(x, scores.to_numpy(), color=color, lw=1)
    marks = [(g, highlight, "") for g in named if g not in coding] + [(g, coding_highlight, ", coding") for g in coding]
    for gene, colour, label in marks:
        rank = int(scores.index.get_loc(gene)) + 1
        a.scatter([rank], [scores.iloc[rank - 1]], color=colour, zorder=3, s=25)
        a.annotate(
            f"{gene} (#{rank}{label})",
            (rank, scores.iloc[rank - 1]),
            xytext=(5, 5),
            textcoords="offset points",
            color=colour,
        )
    if log_x:
        a.set_xscale("log")
    a.set_xlabel(f"rank (of {len(scores)} genes)")
    a.set_ylabel("|saliency|")
    a.set_title(protein)
    return finish(fig, ax=ax, show=show, save=save, return_fig=return_fig)
