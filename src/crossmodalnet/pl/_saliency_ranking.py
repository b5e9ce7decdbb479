"""Top genes of a protein's saliency ranking as a bar chart (paper Fig. 2c)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from crossmodalnet import _keys
from crossmodalnet._docs import docs
from crossmodalnet._utils import select_names

from ._utils import finish, get_uns, grid, saliency_table

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from mudata import MuData

_CALLER = "cmn.pl.saliency_ranking"


@docs.dedent
def saliency_ranking(
    mdata: MuData,
    *,
    proteins: str | Sequence[str] | None = None,
    n_genes: int = 10,
    key: str = _keys.SALIENCY,
    rna_key: str = "rna",
    ncols: int = 3,
    panel_size: tuple[float, float] = (3.5, 3.0),
    colors: tuple[str, str] = ("C3", "C0"),
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    return_fig: bool = False,
) -> Figure | None:
    """Bar chart of the genes with the largest absolute saliency for each protein.

    Reads ``mdata[rna_key].varm[key]`` from :func:`crossmodalnet.tl.saliency`. The strongest gene
    is at the top; bar colour gives the sign of the score, explained by a legend on the first panel.

    Parameters
    ----------
    %(mdata_plot)s
    %(proteins)s
    n_genes
        Number of genes per protein.
    key
        ``key_added`` of :func:`crossmodalnet.tl.saliency`.
    %(rna_key)s
    ncols
        Panels per row.
    panel_size
        Width and height of one panel in inches.
    colors
        Colours of positive and negative scores.
    %(plot_tail)s

    Returns
    -------
    %(plot_returns)s
    """
    get_uns(mdata, key, "cmn.tl.saliency", _CALLER)
    table = saliency_table(mdata, key, rna_key, _CALLER)
    selected = select_names(proteins, table.columns, "protein(s)", _CALLER)
    if n_genes < 1:
        raise ValueError(f"{_CALLER}: `n_genes` must be at least 1, got {n_genes}.")
    fig, axes = grid(len(selected), ax=ax, ncols=ncols, panel_size=panel_size, caller=_CALLER)
    for a, protein in zip(axes, selected, strict=True):
        scores = table[protein].dropna()
        top = scores.iloc[np.argsort(-scores.abs().to_numpy(), kind="stable")[:n_genes]]
        values = top.to_numpy()
        a.barh(
            np.arange(len(top))[::-1],
            np.abs(values),
            color=[colors[0] if v >= 0 else colors[1] for v in values],
        )
        a.set_yticks(np.arange(len(top))[::-1], labels=list(top.index.astype(str)))
        a.set_xlabel("|saliency|")
        a.set_title(protein)
    if selected:
        from matplotlib.patches import Patch

        # one legend for the sign colours, on the first panel
        axes[0].legend(
            handles=[Patch(color=colors[0], label="positive"), Patch(color=colors[1], label="negative")],
            title="saliency sign",
            loc="lower right",
            fontsize="small",
            title_fontsize="small",
        )
    return finish(fig, ax=ax, show=show, save=save, return_fig=return_fig)
