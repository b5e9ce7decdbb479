"""Where named genes sit in a protein's saliency ranking (paper Fig. 2d)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from crossmodalnet import _keys
from crossmodalnet._docs import docs
from crossmodalnet.pp._utils import select_names

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
    genes: str | Sequence[str],
    key: str = _keys.SALIENCY,
    rna_key: str = "rna",
    log_x: bool = False,
    color: str = "0.5",
    highlight: str = "C3",
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    return_fig: bool = False,
) -> Figure | None:
    """Plot the whole saliency ranking of a protein and mark where the named genes sit.

    Genes are ranked by absolute saliency (rank 1 = strongest) from ``mdata[rna_key].varm[key]``
    (:func:`crossmodalnet.tl.saliency`); each named gene is labelled with its rank, e.g. to check that
    a protein's coding gene is near the top.

    Parameters
    ----------
    %(mdata_plot)s
    protein
        Protein whose ranking is drawn.
    genes
        Gene or genes to mark.
    key
        ``key_added`` of :func:`crossmodalnet.tl.saliency`.
    %(rna_key)s
    log_x
        Logarithmic rank axis (for long rankings).
    color
        Colour of the ranking curve.
    highlight
        Colour of the marked genes.
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
    marked = select_names(genes, scores.index, "gene(s) with a score", _CALLER)
    ranks = scores.index.get_indexer(marked) + 1
    fig, (a,) = grid(1, ax=ax, ncols=1, panel_size=(5.0, 3.5), caller=_CALLER)
    x = np.arange(1, len(scores) + 1)
    a.plot(x, scores.to_numpy(), color=color, lw=1)
    a.scatter(ranks, scores.iloc[ranks - 1].to_numpy(), color=highlight, zorder=3, s=25)
    for gene, rank in zip(marked, ranks, strict=True):
        a.annotate(
            f"{gene} (#{rank})",
            (rank, scores.iloc[rank - 1]),
            xytext=(5, 5),
            textcoords="offset points",
            color=highlight,
        )
    if log_x:
        a.set_xscale("log")
    a.set_xlabel(f"rank (of {len(scores)} genes)")
    a.set_ylabel("|saliency|")
    a.set_title(protein)
    return finish(fig, ax=ax, show=show, save=save, return_fig=return_fig)
