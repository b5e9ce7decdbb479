"""Settings of the disentangling phase's conditioning, shared by :mod:`crossmodalnet.train` and :mod:`crossmodalnet.model`."""

from __future__ import annotations

import numpy as np

from crossmodalnet._utils import is_nonnegative_number

DEFAULT_N_CLUSTERS = 10
"""Cell-state clusters of the conditional MMD when ``n_clusters`` is not given."""

STATE_FITS = ("ratio", "interval")
"""How the cell-state term compares distances (``state_fit`` of :func:`disentangle_encoder`)."""

DEFAULT_STATE_FIT = "ratio"
"""``state_fit`` when not given."""

CLUSTERINGS = ("kmeans", "harmony")
"""How the phase finds its cell-state clusters (``clustering`` of :func:`disentangle_encoder`)."""


def resolve_n_clusters(objective: str, n_clusters: int | None) -> int:
    """The number of clusters the phase uses: ``n_clusters``, or its default for ``objective`` when ``None``.

    Parameters
    ----------
    objective
        ``"mmd"`` or ``"confusion"``.
    n_clusters
        ``None`` or a checked value (:func:`check_conditioning`).

    Returns
    -------
    int
        0 for an unconditional phase.
    """
    if n_clusters is None:
        return DEFAULT_N_CLUSTERS if objective == "mmd" else 0
    return int(n_clusters)


def check_conditioning(objective: str, n_clusters: object, min_cells: object) -> None:
    """Raise a :class:`ValueError` naming a bad ``n_clusters`` or ``min_cells`` of :func:`disentangle_encoder`.

    Parameters
    ----------
    objective
        ``"mmd"`` or ``"confusion"``.
    n_clusters
        ``None``, 0, or an integer >= 2 (``"mmd"`` only).
    min_cells
        An integer >= 2.
    """
    if n_clusters is None:
        pass
    elif (
        isinstance(n_clusters, bool)
        or not isinstance(n_clusters, int | np.integer)
        or n_clusters == 1
        or n_clusters < 0
    ):
        raise ValueError(
            "`n_clusters` must be None (the default), 0 (unconditional) or an integer >= 2 (cell-state clusters), "
            f"got {n_clusters!r}."
        )
    if n_clusters and objective != "mmd":
        raise ValueError(f"`n_clusters` applies to objective='mmd' only, not {objective!r}; leave it at 0.")
    if isinstance(min_cells, bool) or not isinstance(min_cells, int | np.integer) or min_cells < 2:
        raise ValueError(f"`min_cells` must be an integer >= 2, got {min_cells!r}.")


def check_state_term(
    objective: str,
    n_clusters: int,
    state_weight: object,
    state_components: object,
    state_fit: object = DEFAULT_STATE_FIT,
) -> None:
    """Raise a :class:`ValueError` naming a bad ``state_weight``, ``state_components`` or ``state_fit`` of :func:`disentangle_encoder`.

    Parameters
    ----------
    objective
        ``"mmd"`` or ``"confusion"``.
    n_clusters
        The resolved number of clusters (:func:`resolve_n_clusters`).
    state_weight
        A finite number >= 0; above 0 it needs the conditional MMD (``objective="mmd"``, ``n_clusters`` >= 2).
    state_components
        An integer >= 1.
    state_fit
        One of :data:`STATE_FITS`.
    """
    if not is_nonnegative_number(state_weight):
        raise ValueError(
            f"`state_weight` must be a finite number >= 0 (0 switches the term off), got {state_weight!r}."
        )
    if isinstance(state_components, bool) or not isinstance(state_components, int | np.integer) or state_components < 1:
        raise ValueError(f"`state_components` must be an integer >= 1, got {state_components!r}.")
    if not isinstance(state_fit, str) or state_fit not in STATE_FITS:
        raise ValueError(f"`state_fit` must be one of {list(STATE_FITS)}, got {state_fit!r}.")
    if state_weight > 0 and (objective != "mmd" or not n_clusters):
        raise ValueError(
            "`state_weight` > 0 needs the cell-state clusters of the conditional MMD (objective='mmd' and "
            f"n_clusters >= 2 or None), got objective={objective!r} with n_clusters={n_clusters}."
        )


def check_clustering(clustering: object, n_clusters: int) -> None:
    """Raise a :class:`ValueError` naming a bad ``clustering`` of :func:`disentangle_encoder`.

    Parameters
    ----------
    clustering
        One of :data:`CLUSTERINGS`.
    n_clusters
        The resolved number of clusters (:func:`resolve_n_clusters`); 0 is the unconditional phase.
    """
    if clustering not in CLUSTERINGS:
        raise ValueError(f"`clustering` must be one of {list(CLUSTERINGS)}, got {clustering!r}.")
    if clustering != "kmeans" and not n_clusters:
        raise ValueError(
            f"`clustering={clustering!r}` needs the cell-state clusters of the conditional MMD (objective='mmd' and "
            "n_clusters >= 2); leave it at 'kmeans' for an unconditional phase."
        )


def check_max_steps(max_steps: object, name: str = "max_steps") -> None:
    """Raise a :class:`ValueError` unless ``max_steps`` of :func:`disentangle_encoder` is ``None`` or an integer >= 1.

    Parameters
    ----------
    max_steps
        The cap on the phase's encoder steps.
    name
        How the error names the setting (``"disentangle_kwargs['max_steps']"`` from ``train``).
    """
    if max_steps is not None and (
        isinstance(max_steps, bool) or not isinstance(max_steps, int | np.integer) or max_steps < 1
    ):
        raise ValueError(f"`{name}` must be an integer >= 1 or None (no cap), got {max_steps!r}.")
