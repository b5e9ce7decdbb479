"""Time points: category codes, interpolation weights and interpolated time embeddings.

The functions are pure numpy and need no model; :class:`TimeMixin` applies them to a model's
registered time categories and learned embedding table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from crossmodalnet._constants import REGISTRY_KEYS

from ._docstrings import docs

if TYPE_CHECKING:
    from collections.abc import Sequence


def numeric_times(categories: np.ndarray) -> np.ndarray | None:
    """Numeric value of each time category, or ``None`` if any is not a number.

    Parameters
    ----------
    categories
        Registered time categories.

    Returns
    -------
    Float array of the same length, or ``None``.
    """
    values = pd.to_numeric(pd.Series(categories), errors="coerce").to_numpy(dtype=float)
    return None if np.isnan(values).any() else values


def time_code(categories: np.ndarray, value: object) -> int:
    """Code of a registered time category (exact match, numeric-aware).

    Parameters
    ----------
    categories
        Registered time categories, in model order.
    value
        A time point: a category or a number equal to a numeric category.

    Returns
    -------
    The position of ``value`` in ``categories``.
    """
    categories = np.asarray(categories)
    hit = np.flatnonzero(categories.astype(str) == str(value))
    values = numeric_times(categories)
    if hit.size == 0 and values is not None:
        try:
            hit = np.flatnonzero(np.isclose(values, float(value)))
        except (TypeError, ValueError):
            hit = np.array([], dtype=int)
    if hit.size == 0:
        raise ValueError(f"Time point {value!r} is not one of the registered time points {categories.tolist()}.")
    return int(hit[0])


def time_weights(
    categories: np.ndarray, trained: np.ndarray, value: object, *, allow_extrapolation: bool = False
) -> np.ndarray:
    """Weights over the time categories that make up the time point ``value``.

    A trained time point is one-hot; an unseen numeric value between two trained points gets the
    linear-interpolation weights of its two neighbours (extrapolation only if allowed).

    Parameters
    ----------
    categories
        Registered time categories, in model order.
    trained
        Codes of the time points seen in training.
    value
        Time point to express.
    allow_extrapolation
        Allow numeric values outside the trained range (linear extrapolation).

    Returns
    -------
    Array of ``len(categories)`` weights summing to 1.
    """
    categories = np.asarray(categories)
    trained = np.asarray(trained, dtype=np.int64)
    weights = np.zeros(len(categories))
    try:
        code = time_code(categories, value)
    except ValueError:
        code = None
    if code is not None and code in trained:
        weights[code] = 1.0
        return weights
    values = numeric_times(categories)
    if values is None:
        raise ValueError(
            f"Time point {value!r} was not seen in training and the registered time points "
            f"{categories.tolist()} are not numeric, so it cannot be interpolated."
        )
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"Time point {value!r} is neither a registered time point nor a number.") from None
    tv = values[trained]
    order = np.argsort(tv)
    tv, trained = tv[order], trained[order]
    if v < tv[0] or v > tv[-1]:
        if not allow_extrapolation:
            raise ValueError(
                f"Time point {v} lies outside the trained range [{tv[0]}, {tv[-1]}]; extrapolating a time "
                "embedding is unreliable. Pass `allow_extrapolation=True` to extrapolate linearly anyway."
            )
        if tv.size == 1:
            weights[trained[0]] = 1.0
            return weights
        hi = 1 if v < tv[0] else tv.size - 1
    else:
        hi = int(np.searchsorted(tv, v, side="left"))
        if tv[hi] == v:
            weights[trained[hi]] = 1.0
            return weights
    lo = hi - 1
    a = (v - tv[lo]) / (tv[hi] - tv[lo])
    weights[trained[lo]] += 1 - a
    weights[trained[hi]] += a
    return weights


class TimeMixin:
    """Time-point lookups of a model: codes, interpolation weights and the time-embedding getters."""

    @property
    def time_categories(self) -> np.ndarray:
        """Registered time points in model order (numeric order for numeric times)."""
        return np.asarray(self.get_state_registry(REGISTRY_KEYS.TIME_KEY).categorical_mapping)

    @property
    def time_values(self) -> np.ndarray | None:
        """Numeric value of each time category, or ``None`` if the time points are not numeric."""
        return numeric_times(self.time_categories)

    def _time_code(self, value: object) -> int:
        return time_code(self.time_categories, value)

    def _trained_codes(self) -> np.ndarray:
        if self.trained_time_codes_ is None:
            return np.arange(len(self.time_categories))
        return np.asarray(self.trained_time_codes_, dtype=np.int64)

    def _time_weights(self, value: object, *, allow_extrapolation: bool = False) -> np.ndarray:
        return time_weights(self.time_categories, self._trained_codes(), value, allow_extrapolation=allow_extrapolation)

    def _time_embedding_of(self, value: object, *, allow_extrapolation: bool = False) -> torch.Tensor:
        """Embedding of one time value: learned, or interpolated between the two nearest trained points."""
        table = self.module.covariate_embeddings[0].weight.detach()
        w = torch.as_tensor(self._time_weights(value, allow_extrapolation=allow_extrapolation), dtype=table.dtype)
        return w.to(table.device) @ table

    def _embedding_frame(self, values: Sequence[object], index: pd.Index, **kwargs) -> pd.DataFrame:
        rows = [self._time_embedding_of(v, **kwargs).cpu().numpy() for v in values]
        n_latent = self.module.n_latent
        return pd.DataFrame(
            np.vstack(rows) if rows else np.zeros((0, n_latent), dtype=np.float32),
            index=index,
            columns=[f"dim_{i}" for i in range(n_latent)],
        )

    @docs.dedent
    def interpolate_time_embedding(self, values: Sequence[float], *, allow_extrapolation: bool = False) -> pd.DataFrame:
        """Return the time embedding at arbitrary numeric time points.

        Trained time points give their learned embedding; values between two trained points give the
        linear interpolation of their embeddings (paper §4.2), as used by :meth:`~crossmodalnet.model.CrossmodalNet.predict_protein`.

        Parameters
        ----------
        values
            Numeric time points.
        %(allow_extrapolation)s

        Returns
        -------
        Values × ``n_latent`` DataFrame indexed by the values.
        """
        index = pd.Index(list(values), name="time")
        return self._embedding_frame(values, index, allow_extrapolation=allow_extrapolation)

    def get_time_embedding(self, *, include_untrained: bool = False) -> pd.DataFrame:
        """Return the learned time embedding.

        Parameters
        ----------
        include_untrained
            Also list registered time points never seen in training (e.g. a held-out one), with
            their interpolated embedding.

        Returns
        -------
        Time points × ``n_latent`` DataFrame, index = time points as registered (in time order).
        """
        codes = np.arange(len(self.time_categories)) if include_untrained else self._trained_codes()
        index = pd.Index(self.time_categories[codes].astype(str), name="time")
        return self._embedding_frame(self.time_categories[codes], index)
