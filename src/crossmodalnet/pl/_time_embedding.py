"""PCA of the learned time embedding (paper Fig. S2)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from crossmodalnet import _keys
from crossmodalnet._docs import docs

from ._utils import finish, get_uns, grid

if TYPE_CHECKING:
    from pathlib import Path

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from mudata import MuData

_CALLER = "cmn.pl.time_embedding"


@docs.dedent
def time_embedding(
    mdata: MuData,
    *,
    key: str = _keys.TIME,
    components: tuple[int, int] = (0, 1),
    annotate: bool = True,
    cmap: str = "viridis",
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    return_fig: bool = False,
) -> Figure | None:
    """Scatter the time points in the PCA of the learned time embedding.

    Reads ``mdata.uns[key]`` from :func:`crossmodalnet.tl.time_embedding`. Trained time points are
    filled circles joined in time order, registered time points that were never trained (and so are
    interpolated) are open circles, and extra interpolated values are crosses; colour follows time.

    Parameters
    ----------
    %(mdata_plot)s
    key
        ``key_added`` of :func:`crossmodalnet.tl.time_embedding`.
    components
        The two principal components to show (0-based).
    annotate
        Label every point with its time point.
    cmap
        Colour map of time.
    %(plot_tail)s

    Returns
    -------
    %(plot_returns)s
    """
    import matplotlib as mpl

    rec = get_uns(mdata, key, "cmn.tl.time_embedding", _CALLER)
    pca = np.asarray(rec["pca"], dtype=float)
    i, j = components
    if not (0 <= i < pca.shape[1] and 0 <= j < pca.shape[1]):
        raise ValueError(
            f"{_CALLER}: `components` must be below the {pca.shape[1]} stored components, got {components}."
        )
    labels = np.asarray(rec["time_points"]).astype(str)
    trained = np.asarray(rec["trained"], dtype=bool)
    order = np.arange(len(labels), dtype=float) if "time_values" not in rec else np.asarray(rec["time_values"], float)
    extra = rec.get("interpolated")
    all_t = order if extra is None else np.concatenate([order, np.asarray(extra["time_values"], float)])
    norm = mpl.colors.Normalize(vmin=all_t.min(), vmax=all_t.max() if all_t.max() > all_t.min() else all_t.min() + 1)
    colors = mpl.colormaps[cmap]

    fig, (a,) = grid(1, ax=ax, ncols=1, panel_size=(4.0, 3.5), caller=_CALLER)
    a.plot(pca[trained, i], pca[trained, j], color="0.7", lw=1, ls="--", zorder=1)
    a.scatter(pca[trained, i], pca[trained, j], c=colors(norm(order[trained])), s=60, zorder=2, label="trained")
    if (~trained).any():
        a.scatter(
            pca[~trained, i],
            pca[~trained, j],
            facecolors="none",
            edgecolors=colors(norm(order[~trained])),
            s=60,
            linewidths=1.5,
            zorder=2,
            label="not trained (interpolated)",
        )
    points = [(pca[k, i], pca[k, j], labels[k]) for k in range(len(labels))]
    if extra is not None:
        xp = np.asarray(extra["pca"], dtype=float)
        tv = np.asarray(extra["time_values"], dtype=float)
        a.scatter(xp[:, i], xp[:, j], c=colors(norm(tv)), marker="x", s=50, zorder=2, label="interpolated")
        points += [(xp[k, i], xp[k, j], f"{tv[k]:g}") for k in range(len(tv))]
    if annotate:
        for x, y, text in points:
            a.annotate(text, (x, y), xytext=(4, 4), textcoords="offset points")
    ratio = np.asarray(rec.get("pca_variance_ratio", np.zeros(pca.shape[1])), dtype=float)
    a.set_xlabel(f"PC{i + 1} ({ratio[i]:.0%})")
    a.set_ylabel(f"PC{j + 1} ({ratio[j]:.0%})")
    a.set_title("time embedding")
    a.legend(loc="best", fontsize="small", frameon=False)
    return finish(fig, ax=ax, show=show, save=save, return_fig=return_fig)
