"""Helpers shared by :mod:`crossmodalnet.pp`, :mod:`crossmodalnet.tl` and :mod:`crossmodalnet.pl` (no torch import)."""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from collections.abc import Sequence

    import mudata as md


def obs_mask(
    mdata: md.MuData,
    mask: str | Sequence[bool] | np.ndarray | pd.Series | None,
    name: str,
    caller: str,
    *,
    obs_names: pd.Index | None = None,
) -> np.ndarray | None:
    """Boolean mask over ``obs_names`` (default ``mdata.obs_names``) from a column name or an array.

    A column or :class:`pandas.Series` is aligned by cell name; a plain array must already be aligned
    with ``mdata.obs_names``. Returns ``None`` for ``None``.
    """
    if mask is None:
        return None
    if isinstance(mask, str):
        if mask not in mdata.obs:
            raise KeyError(
                f"{caller}: `{name}={mask!r}` is not a column of `mdata.obs`; columns are {list(mdata.obs.columns)}."
            )
        series = mdata.obs[mask]
    elif isinstance(mask, pd.Series):
        series = mask
    else:
        values = np.asarray(mask)
        if values.shape != (mdata.n_obs,):
            raise ValueError(
                f"{caller}: `{name}` has shape {values.shape}; expected one value per cell of `mdata` ({mdata.n_obs},)."
            )
        series = pd.Series(values, index=mdata.obs_names)
    if series.isna().any() or not pd.api.types.is_bool_dtype(series.dtype):
        raise ValueError(f"{caller}: `{name}` must be boolean without missing values, got dtype {series.dtype}.")
    target = mdata.obs_names if obs_names is None else obs_names
    if not series.index.is_unique:
        raise ValueError(f"{caller}: `{name}` has duplicated cell names.")
    aligned = series.reindex(target)
    if aligned.isna().any():
        raise ValueError(f"{caller}: `{name}` does not cover {int(aligned.isna().sum())} cell(s) of the data.")
    out = aligned.to_numpy(dtype=bool)
    if not out.any():
        raise ValueError(f"{caller}: `{name}` selects no cell.")
    return out


def resolve_seed(rng: int | np.random.Generator | None) -> int | None:
    """Integer seed for libraries that take one (gseapy, scikit-learn); ``None`` stays ``None``."""
    if rng is None:
        return None
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(0, 2**31 - 1))
    if isinstance(rng, bool) or not isinstance(rng, numbers.Integral) or rng < 0:
        raise ValueError(f"`rng` must be a non-negative int, a numpy.random.Generator or None, got {rng!r}.")
    return int(rng)


def select_names(value: str | Sequence[str] | None, available: Sequence[str], what: str, caller: str) -> list[str]:
    """Requested names (all of ``available`` if ``None``), or a :class:`KeyError` naming the unknown ones."""
    avail = [str(a) for a in available]
    names = avail if value is None else ([value] if isinstance(value, str) else [str(v) for v in value])
    unknown = [n for n in names if n not in set(avail)]
    if unknown:
        raise KeyError(
            f"{caller}: unknown {what} {unknown[:5]}; available: {avail[:10]}{' ...' if len(avail) > 10 else ''}."
        )
    if not names:
        raise ValueError(f"{caller}: no {what} selected.")
    return names
