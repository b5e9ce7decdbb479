"""Calibration of predicted-protein intervals: observed coverage against nominal level, error against spread."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
from scipy.stats import spearmanr

from crossmodalnet import _keys
from crossmodalnet._docs import docs

from ._utils import finish, get_uns, grid, observed_proteins, observed_values

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from mudata import MuData

_CALLER = "cmn.pl.calibration"
_PANELS = ("both", "coverage", "error")


@docs.dedent
def calibration(
    mdata: MuData,
    *,
    proteins: str | Sequence[str] | None = None,
    key: str = _keys.PROTEIN,
    protein_key: str | None = None,
    panels: Literal["both", "coverage", "error"] = "both",
    n_bins: int = 10,
    color: str = "C0",
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    return_fig: bool = False,
) -> Figure | None:
    """Plot how well predicted-protein intervals are calibrated against observed proteins.

    Left: the observed fraction of values inside the central interval against its nominal level,
    for the levels recorded by :func:`crossmodalnet.tl.predict_protein` with ``uncertainty=True``
    (a calibrated model lies on the diagonal). Right: mean absolute error against mean predicted
    spread in ``n_bins`` equal-count bins of the spread, with the mean over proteins of the Spearman
    correlation between spread and absolute error in the title. Only the cells recorded as scored
    (the test cells on the model's own training data) are used.

    Parameters
    ----------
    %(mdata_plot)s
    %(proteins)s
    %(prediction_keys)s
    panels
        Draw both panels, or only ``"coverage"`` or ``"error"`` (needed with ``ax``).
    n_bins
        Bins of the spread in the error panel.
    color
        Line and marker colour.
    %(plot_tail)s

    Returns
    -------
    %(plot_returns)s
    """
    if panels not in _PANELS:
        raise ValueError(f"{_CALLER}: `panels` must be one of {_PANELS}, got {panels!r}.")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 2:
        raise ValueError(f"{_CALLER}: `n_bins` must be an integer of at least 2, got {n_bins!r}.")
    meta = get_uns(mdata, key, "cmn.tl.predict_protein", _CALLER)
    keys = _keys.Keys(key)
    record = meta.get("uncertainty")
    if record is None or keys.obsm_std not in mdata.obsm or keys.obsm not in mdata.obsm:
        raise KeyError(
            f"{_CALLER}: no uncertainty under key {key!r} (`mdata.obsm[{keys.obsm_std!r}]`); run "
            "`cmn.tl.predict_protein(mdata, model, uncertainty=True)` first."
        )
    pred, std = mdata.obsm[keys.obsm], mdata.obsm[keys.obsm_std]
    prot, layer, selected = observed_proteins(
        mdata, pred.columns, meta, protein_key=protein_key, layer=None, proteins=proteins, caller=_CALLER
    )
    cells = pred.index[np.asarray(record["eval_indices"], dtype=np.int64)]
    cells = cells.intersection(prot.obs_names, sort=False)
    if len(cells) < 2:
        raise ValueError(f"{_CALLER}: fewer than 2 scored cells have observed proteins.")
    true = observed_values(prot, layer, cells, selected)
    guess = pred.loc[cells, selected].to_numpy(dtype=float)
    spread = std.loc[cells, selected].to_numpy(dtype=float)
    err = np.abs(true - guess)
    cols = list(pred.columns).index
    k = np.asarray(record["multipliers"], dtype=float)[:, [cols(p) for p in selected]]
    levels = np.asarray(record["levels"], dtype=float)

    wanted = ["coverage", "error"] if panels == "both" else [panels]
    fig, axes = grid(len(wanted), ax=ax, ncols=2, panel_size=(3.6, 3.4), caller=_CALLER)
    for a, panel in zip(axes, wanted, strict=True):
        if panel == "coverage":
            cover = [float((err <= k[i] * spread).mean()) for i in range(levels.size)]
            a.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--")
            a.plot(levels, cover, marker="o", color=color)
            a.set_xlim(0, 1)
            a.set_ylim(0, 1)
            a.set_xlabel("nominal level")
            a.set_ylabel("observed coverage")
            a.set_title(f"coverage ({len(cells)} cells)")
        else:
            order = np.argsort(spread.ravel(), kind="stable")
            bins = np.array_split(order, n_bins)
            x = [spread.ravel()[b].mean() for b in bins if b.size]
            y = [err.ravel()[b].mean() for b in bins if b.size]
            rho = [
                spearmanr(spread[:, j], err[:, j]).statistic
                for j in range(spread.shape[1])
                if np.ptp(spread[:, j]) > 0 and np.ptp(err[:, j]) > 0
            ]
            a.plot(x, y, marker="o", color=color)
            a.set_xlabel("predicted spread (std)")
            a.set_ylabel("mean |observed − predicted|")
            a.set_title(f"error vs spread\nmean Spearman per protein {np.mean(rho) if rho else np.nan:.2f}")
    return finish(fig, ax=ax, show=show, save=save, return_fig=return_fig)
