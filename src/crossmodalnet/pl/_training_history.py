"""Training curves of a CrossmodalNet: losses, GradNorm weights, validation Pearson."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from crossmodalnet._docs import docs

from ._utils import finish, grid

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from crossmodalnet.model import CrossmodalNet

_CALLER = "cmn.pl.training_history"
_PANELS = {
    "loss": ("loss", ["loss_train", "nlc_train", "mse_train", "nlc_validation", "mse_validation"]),
    "weights": ("GradNorm weight", ["w_nlc", "w_fader"]),
    "pearson": ("validation Pearson", ["pearson_cell_validation", "pearson_protein_validation"]),
}


@docs.dedent
def training_history(
    model: CrossmodalNet,
    *,
    panels: Literal["loss", "weights", "pearson"] | Sequence[Literal["loss", "weights", "pearson"]] = (
        "loss",
        "weights",
        "pearson",
    ),
    panel_size: tuple[float, float] = (3.5, 3.0),
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    return_fig: bool = False,
) -> Figure | None:
    """Plot the training history of a model: losses, GradNorm task weights and validation Pearson.

    The one plot that takes a model rather than a MuData: the curves live in ``model.history``.
    Validation curves are dashed.

    Parameters
    ----------
    model
        A trained :class:`~crossmodalnet.model.CrossmodalNet`.
    panels
        Which panels to draw, in order: ``"loss"`` (total, NLC and MSE), ``"weights"`` (GradNorm
        weights of the NLC and Fader tasks) and ``"pearson"`` (validation Pearson per cell and per
        protein).
    panel_size
        Width and height of one panel in inches.
    %(plot_tail)s

    Returns
    -------
    %(plot_returns)s
    """
    history = getattr(model, "history", None)
    if not history:
        raise ValueError(f"{_CALLER}: the model has no training history; train it first.")
    chosen = [panels] if isinstance(panels, str) else list(panels)
    unknown = [p for p in chosen if p not in _PANELS]
    if unknown or not chosen:
        raise ValueError(f"{_CALLER}: `panels` must be a non-empty selection of {list(_PANELS)}, got {chosen}.")
    fig, axes = grid(len(chosen), ax=ax, ncols=len(chosen), panel_size=panel_size, caller=_CALLER)
    for a, name in zip(axes, chosen, strict=True):
        ylabel, series = _PANELS[name]
        drawn = 0
        colors: dict[str, str] = {}
        for col in series:
            if col not in history:
                continue
            values = history[col].iloc[:, 0].astype(float)
            validation = col.endswith("_validation")
            base = col.removesuffix("_validation").removesuffix("_train")
            color = colors.setdefault(base, f"C{len(colors)}")
            a.plot(values.index, values.to_numpy(), label=col, color=color, ls="--" if validation else "-")
            drawn += 1
        if not drawn:
            a.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=a.transAxes)
        else:
            a.legend(fontsize="small", frameon=False)
        a.set_xlabel("epoch")
        a.set_ylabel(ylabel)
    return finish(fig, ax=ax, show=show, save=save, return_fig=return_fig)
