"""Write the learned time embedding (and its PCA) into a MuData."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from crossmodalnet import _keys
from crossmodalnet._docs import docs

from ._utils import check_model, log_added, model_info, portable

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mudata import MuData

    from crossmodalnet.model import CrossmodalNet

_CALLER = "cmn.tl.time_embedding"


def _interpolated(model: CrossmodalNet, values: np.ndarray, *, allow_extrapolation: bool) -> np.ndarray:
    return model.interpolate_time_embedding(
        [float(v) for v in values], allow_extrapolation=allow_extrapolation
    ).to_numpy()


@docs.dedent
def time_embedding(
    mdata: MuData,
    model: CrossmodalNet,
    *,
    interpolate: Sequence[float] | None = None,
    allow_extrapolation: bool = False,
    n_comps: int = 2,
    key_added: str = _keys.TIME,
    copy: bool = False,
) -> MuData | None:
    """Store the model's learned time embedding and its PCA (paper Fig. S2).

    Every registered time point is listed: trained ones with their learned vector, time points
    never seen in training (e.g. a held-out day) with the linear interpolation of their trained
    neighbours, which is how the model predicts them. A PCA is fitted on the trained time points and
    every vector is projected onto it. Evenly spaced days give evenly spaced points when the
    embedding has learned a smooth time course.

    Parameters
    ----------
    %(mdata)s Only ``mdata.uns`` is written; the cells are not used.
    %(model)s
    interpolate
        Further numeric time values to embed by interpolation (e.g. ``[2.5, 3.5]``).
    allow_extrapolation
        Allow ``interpolate`` values outside the trained range (linear extrapolation).
    n_comps
        Number of principal components.
    %(key_added)s
    %(copy)s

    Returns
    -------
    ``None``, or a copy if ``copy=True``. Sets ``mdata.uns[key_added]`` with:

    ``time_points``
        Registered time points in time order (str), with ``time_values`` (float) when numeric.
    ``trained``
        Boolean, whether each time point was trained (else interpolated).
    ``embedding``
        Array (time points × ``n_latent``).
    ``pca``, ``pca_variance_ratio``
        PCA coordinates (time points × ``n_comps``) and explained variance ratio, fitted on the
        trained time points.
    ``interpolated``
        With ``interpolate``: ``time_values``, ``embedding`` and ``pca`` of those values.
    ``params``, ``model``, ``protein_names``
        As for the other :mod:`crossmodalnet.tl` writers.
    """
    from sklearn.decomposition import PCA

    keys = _keys.Keys(key_added)
    model = check_model(model, _CALLER)
    if n_comps < 1:
        raise ValueError(f"{_CALLER}: `n_comps` must be at least 1, got {n_comps}.")
    table = model.get_time_embedding(include_untrained=True)
    emb = table.to_numpy(dtype=np.float64)
    codes = getattr(model, "trained_time_codes_", None)
    trained = np.ones(len(table), dtype=bool) if codes is None else np.isin(np.arange(len(table)), codes)
    extra = None
    if interpolate is not None:
        values = np.atleast_1d(np.asarray(interpolate, dtype=float))
        if model.time_values is None:
            raise ValueError(f"{_CALLER}: the model's time points are not numeric, so `interpolate` is not possible.")
        extra = {
            "time_values": values,
            "embedding": _interpolated(model, values, allow_extrapolation=allow_extrapolation),
        }

    fit = emb[trained]
    k = max(1, min(n_comps, fit.shape[0], fit.shape[1]))
    pca = PCA(n_components=k).fit(fit)

    def project(x: np.ndarray) -> np.ndarray:
        out = np.zeros((x.shape[0], n_comps))
        out[:, :k] = pca.transform(x)
        return out

    ratio = np.zeros(n_comps)
    ratio[:k] = np.nan_to_num(pca.explained_variance_ratio_)
    record = {
        "time_points": np.asarray(table.index.astype(str)),
        "time_values": model.time_values,
        "trained": trained,
        "embedding": emb,
        "pca": project(emb),
        "pca_variance_ratio": ratio,
        "params": {
            "interpolate": None if interpolate is None else extra["time_values"],
            "allow_extrapolation": allow_extrapolation,
            "n_comps": n_comps,
            "key_added": key_added,
        },
        "model": model_info(model),
        "protein_names": list(model.protein_names),
    }
    if extra is not None:
        extra["pca"] = project(extra["embedding"])
        record["interpolated"] = extra
    if copy:
        mdata = mdata.copy()
    mdata.uns[keys.uns] = portable(record)
    log_added(_CALLER, [f"mdata.uns[{keys.uns!r}] ({len(table)} time points × {emb.shape[1]})"])
    return mdata if copy else None
