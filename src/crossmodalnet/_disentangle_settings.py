"""Settings of the disentangling phase's conditioning, shared by :mod:`crossmodalnet.train` and :mod:`crossmodalnet.model`."""

from __future__ import annotations

import numpy as np

DEFAULT_N_CLUSTERS = 10
"""Cell-state clusters of the conditional MMD when ``n_clusters`` is not given."""


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
