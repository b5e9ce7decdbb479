"""GSEA running enrichment score of a protein's saliency ranking (paper Fig. 4)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from crossmodalnet import _keys
from crossmodalnet._docs import docs
from crossmodalnet._utils import select_names

from ._utils import finish, get_uns, grid

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from mudata import MuData

_CALLER = "cmn.pl.enrichment"


@docs.dedent
def enrichment(
    mdata: MuData,
    *,
    protein: str,
    terms: str | Sequence[str] | None = None,
    key: str = _keys.ENRICHMENT,
    ncols: int = 2,
    panel_size: tuple[float, float] = (4.5, 3.0),
    color: str = "C2",
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    return_fig: bool = False,
) -> Figure | None:
    """Plot the running enrichment score of gene sets along a protein's saliency ranking.

    Reads ``mdata.uns[key]['running'][protein]`` from :func:`crossmodalnet.tl.enrichment`. The
    curve is the GSEA running score; ticks at the bottom mark the genes of the set in the ranking
    (strongest positive scores on the left).

    Parameters
    ----------
    %(mdata_plot)s
    protein
        Protein whose enrichment is drawn.
    terms
        Gene-set name or names; by default the top term. Only the ``n_running`` top terms stored
        by :func:`crossmodalnet.tl.enrichment` can be drawn.
    key
        ``key_added`` of :func:`crossmodalnet.tl.enrichment`.
    ncols
        Panels per row.
    panel_size
        Width and height of one panel in inches.
    color
        Colour of the running score.
    %(plot_tail)s

    Returns
    -------
    %(plot_returns)s
    """
    rec = get_uns(mdata, key, "cmn.tl.enrichment", _CALLER)
    running = rec.get("running", {})
    if not isinstance(protein, str):
        raise TypeError(f"{_CALLER}: `protein` must be one protein name, got {protein!r}.")
    select_names(protein, list(running), "protein", _CALLER)
    run = running[protein]
    stored = np.asarray(run["term"]).astype(str)
    if len(stored) == 0:
        raise ValueError(f"{_CALLER}: no running score is stored for {protein!r}; rerun with `n_running` > 0.")
    selected = select_names(
        stored[0] if terms is None else terms, stored, "term(s) with a stored running score", _CALLER
    )
    res, hits = np.asarray(run["res"], dtype=float), np.asarray(run["hits"], dtype=bool)
    nes, fdr = np.asarray(run["nes"], dtype=float), np.asarray(run["fdr"], dtype=float)
    fig, axes = grid(len(selected), ax=ax, ncols=ncols, panel_size=panel_size, caller=_CALLER)
    for a, term in zip(axes, selected, strict=True):
        k = int(np.flatnonzero(stored == term)[0])
        x = np.arange(res.shape[1])
        a.plot(x, res[k], color=color, lw=1.5)
        a.axhline(0, color="0.5", lw=0.8)
        a.vlines(np.flatnonzero(hits[k]), 0, 0.08, transform=a.get_xaxis_transform(), color="k", lw=0.6)
        a.set_xlim(0, max(res.shape[1] - 1, 1))
        a.set_xlabel("gene rank (saliency)")
        a.set_ylabel("enrichment score")
        a.set_title(f"{term}\nNES {nes[k]:.2f}, FDR {fdr[k]:.3g}", fontsize="medium")
    return finish(fig, ax=ax, show=show, save=save, return_fig=return_fig)
