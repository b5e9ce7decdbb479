"""Train/validation/test splits: reproducible splits stratified by time point (pure numpy), and a model's split."""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np

from crossmodalnet._constants import REGISTRY_KEYS

from ._validation import check_external_indexing

logger = logging.getLogger(__name__)


def _validate_sizes(train_size: float, validation_size: float) -> None:
    if not 0 < train_size <= 1:
        raise ValueError(f"`train_size` must be in (0, 1], got {train_size}.")
    if not 0 <= validation_size < 1:
        raise ValueError(f"`validation_size` must be in [0, 1), got {validation_size}.")
    if train_size + validation_size > 1 + 1e-9:
        raise ValueError(f"`train_size + validation_size` must be at most 1, got {train_size} + {validation_size}.")


def stratified_split(
    groups: np.ndarray,
    *,
    train_size: float = 0.8,
    validation_size: float = 0.05,
    rng: int | np.random.Generator | None = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split cells into train/validation/test so each group keeps its proportion in each set.

    The paper's in-distribution setting: 80/5/15 with the proportion of every time point
    equal in each set. The test set gets what is left after train and validation.

    Parameters
    ----------
    groups
        Group label (e.g. time-point code) of every cell.
    train_size, validation_size
        Fractions of each group.
    rng
        Seed or generator.

    Returns
    -------
    Sorted integer indices of the train, validation and test cells.
    """
    _validate_sizes(train_size, validation_size)
    gen = np.random.default_rng(rng)
    groups = np.asarray(groups)
    train, val, test = [], [], []
    for g in np.unique(groups):
        idx = gen.permutation(np.flatnonzero(groups == g))
        n = idx.size
        n_val = int(round(n * validation_size))
        if validation_size > 0 and n_val == 0 and n >= 3:
            n_val = 1
        n_train = n - n_val if train_size + validation_size >= 1 - 1e-9 else int(round(n * train_size))
        n_train = max(min(n_train, n - n_val), 1 if n > 0 else 0)
        train.append(idx[:n_train])
        val.append(idx[n_train : n_train + n_val])
        test.append(idx[n_train + n_val :])
    return tuple(np.sort(np.concatenate(part)).astype(np.int64) for part in (train, val, test))


def holdout_split(
    groups: np.ndarray,
    holdout: object,
    *,
    train_size: float = 0.8,
    validation_size: float = 0.05,
    rng: int | np.random.Generator | None = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hold out every cell of one group as the test set; split the rest into train/validation.

    The paper's out-of-distribution setting. The remaining cells are split in the ratio
    ``train_size : validation_size``, stratified by group.

    Parameters
    ----------
    groups
        Group label (time point) of every cell.
    holdout
        The group whose cells form the test set.
    train_size, validation_size
        Relative sizes of the train and validation sets among the remaining cells.
    rng
        Seed or generator.

    Returns
    -------
    Sorted integer indices of the train, validation and test cells.
    """
    _validate_sizes(train_size, validation_size)
    groups = np.asarray(groups)
    is_test = groups == holdout
    if not is_test.any():
        raise ValueError(f"No cell belongs to the held-out group {holdout!r}; groups are {np.unique(groups).tolist()}.")
    if is_test.all():
        raise ValueError(f"Every cell belongs to the held-out group {holdout!r}: nothing is left to train on.")
    rest = np.flatnonzero(~is_test)
    frac_train = train_size / (train_size + validation_size)
    tr, va, _ = stratified_split(groups[rest], train_size=frac_train, validation_size=1 - frac_train, rng=rng)
    return np.sort(rest[tr]), np.sort(rest[va]), np.flatnonzero(is_test).astype(np.int64)


class SplitMixin:
    """The split a model trains on: drawn at the first ``train``, given as ``external_indexing``, or kept."""

    def _make_split(
        self,
        split: Literal["random", "holdout_time"],
        holdout_time: object,
        train_size: float,
        validation_size: float,
        seed: int,
    ) -> list[np.ndarray]:
        codes = self.adata_manager.get_from_registry(REGISTRY_KEYS.TIME_KEY).reshape(-1)
        if split == "random":
            parts = stratified_split(codes, train_size=train_size, validation_size=validation_size, rng=seed)
        elif split == "holdout_time":
            if holdout_time is None:
                raise ValueError("`split='holdout_time'` needs `holdout_time`, the time point to hold out.")
            code = self._time_code(holdout_time)
            parts = holdout_split(codes, code, train_size=train_size, validation_size=validation_size, rng=seed)
        else:
            raise ValueError(f"`split` must be 'random' or 'holdout_time', got {split!r}.")
        return list(parts)

    def _previous_split(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Train, validation and test positions of an earlier ``train`` call on this data, if any."""
        if not self.is_trained_ or not self.split_:
            return None
        try:
            parts = [
                np.asarray(a, dtype=np.int64) for a in (self.train_indices, self.validation_indices, self.test_indices)
            ]
        except AttributeError:
            return None
        if sum(p.size for p in parts) != self.adata.n_obs or any(p.size and p.max() >= self.adata.n_obs for p in parts):
            return None
        return parts[0], parts[1], parts[2]

    def _resolve_split(
        self,
        split: Literal["random", "holdout_time"],
        holdout_time: object,
        train_size: float,
        validation_size: float,
        seed: int,
        external_indexing: list | None,
    ) -> tuple[list[np.ndarray], bool]:
        """The split of this ``train`` call and whether it continues an earlier one; records ``split_``."""
        if external_indexing is not None:
            given = check_external_indexing(external_indexing, self.adata.n_obs)
            requested = {"kind": "external"}
        else:
            requested = {"kind": split, "seed": int(seed), "train_size": float(train_size)}
            requested["validation_size"] = float(validation_size)
        previous = self._previous_split()
        if previous is not None:
            # Continued training: a new split would train on the model's earlier test cells.
            same = all(self.split_.get(k) == v for k, v in requested.items()) and (
                external_indexing is None
                or all(np.array_equal(np.sort(a), np.sort(b)) for a, b in zip(given, previous, strict=True))
            )
            if not same:
                logger.warning(
                    "Continued training keeps the model's split %s; the split arguments of this call are ignored "
                    "(a new split would train on earlier test cells). Train a new model for another split.",
                    {k: self.split_.get(k) for k in requested},
                )
            logger.info(
                "Continuing training from the current weights on the same split (%d train, %d validation cells)",
                previous[0].size,
                previous[1].size,
            )
            return list(previous), True
        if external_indexing is not None:
            parts = given
        else:
            parts = self._make_split(split, holdout_time, train_size, validation_size, seed)
        self.split_ = {
            **requested,
            **dict(zip(("n_train", "n_validation", "n_test"), (int(p.size) for p in parts), strict=True)),
        }
        if split == "holdout_time" and external_indexing is None:
            self.split_["holdout_time"] = str(holdout_time)
        return parts, False
