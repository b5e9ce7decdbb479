"""Reproducible train/validation/test splits stratified by time point (pure numpy)."""

from __future__ import annotations

import numpy as np


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
