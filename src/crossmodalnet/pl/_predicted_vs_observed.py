"""Predicted against observed protein abundance, one panel per protein (paper Fig. 2a/b)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from crossmodalnet import _keys
from crossmodalnet._constants import ALL_CELLS_INCLUDING_TRAINING, NO_TRAINING_CELLS
from crossmodalnet._docs import docs

from ._utils import finish, get_uns, grid, observed_proteins, observed_values

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from mudata import MuData

_CALLER = "cmn.pl.predicted_vs_observed"


@docs.dedent
def predicted_vs_observed(
    mdata: MuData,
    *,
    proteins: str | Sequence[str] | None = None,
    key: str = _keys.PROTEIN,
    protein_key: str | None = None,
    layer: str | None = None,
    ncols: int = 4,
    panel_size: tuple[float, float] = (3.0, 3.0),
    size: float | None = None,
    color: str = "C0",
    cells: Literal["scored", "all"] = "scored",
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    return_fig: bool = False,
) -> Figure | None:
    """Scatter predicted against observed abundance for each protein, with Pearson's r in the title.

    Reads ``mdata.obsm[key]`` (from :func:`crossmodalnet.tl.predict_protein`) and the observed
    proteins in ``mdata[protein_key]``; cells with both are drawn.

    Parameters
    ----------
    %(mdata_plot)s
    %(proteins)s
    %(prediction_keys)s
    layer
        Layer of the observed proteins; defaults to the layer the model was trained on.
    ncols
        Panels per row.
    panel_size
        Width and height of one panel in inches.
    size
        Marker size; scaled to the number of cells by default.
    color
        Marker colour.
    cells
        ``"scored"``: the cells :func:`crossmodalnet.tl.predict_protein` computed its metrics on (the
        model's test cells when it knows its training cells). ``"all"``: every cell with a prediction
        and an observation. The title says which, e.g. ``"r = 0.78, test cells"`` or
        ``"all cells (includes training cells)"``.
    %(plot_tail)s

    Returns
    -------
    %(plot_returns)s
    """
    meta = get_uns(mdata, key, "cmn.tl.predict_protein", _CALLER)
    keys = _keys.Keys(key)
    if keys.obsm not in mdata.obsm:
        raise KeyError(f"{_CALLER}: no `mdata.obsm[{keys.obsm!r}]`; run `cmn.tl.predict_protein` first.")
    pred = mdata.obsm[keys.obsm]
    prot, layer, selected = observed_proteins(
        mdata, pred.columns, meta, protein_key=protein_key, layer=layer, proteins=proteins, caller=_CALLER
    )
    if cells not in ("scored", "all"):
        raise ValueError(f"{_CALLER}: `cells` must be 'scored' or 'all', got {cells!r}.")
    scored = meta.get("metrics", {}) if isinstance(meta.get("metrics"), dict) else {}
    label = str(scored.get("cells", ALL_CELLS_INCLUDING_TRAINING))
    which = pred.index[pred.notna().all(axis=1).to_numpy()].intersection(prot.obs_names, sort=False)
    if cells == "scored" and "cell_names" in scored:
        which = which.intersection(pd.Index(np.asarray(scored["cell_names"], dtype=str)), sort=False)
        label = "test cells" if label == "test" else label
    elif label != NO_TRAINING_CELLS:
        label = ALL_CELLS_INCLUDING_TRAINING
    cells = which
    if len(cells) == 0:
        raise ValueError(f"{_CALLER}: no cell has both a prediction and an observation.")
    true = observed_values(prot, layer, cells, selected)
    guess = pred.loc[cells, selected].to_numpy(dtype=float)
    s = size if size is not None else float(np.clip(2000 / len(cells), 1, 20))

    fig, axes = grid(len(selected), ax=ax, ncols=ncols, panel_size=panel_size, caller=_CALLER)
    for j, (a, protein) in enumerate(zip(axes, selected, strict=True)):
        x, y = true[:, j], guess[:, j]
        r = np.corrcoef(x, y)[0, 1] if x.std() > 0 and y.std() > 0 else np.nan
        a.scatter(x, y, s=s, c=color, alpha=0.6, linewidths=0, rasterized=len(cells) > 5000)
        a.set_title(f"{protein}\nr = {r:.2f}, {label}")
        a.set_xlabel("observed")
        a.set_ylabel("predicted")
    return finish(fig, ax=ax, show=show, save=save, return_fig=return_fig)
