"""How well a linear probe reads a covariate (time, batch, cell type) from an embedding."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from crossmodalnet import _keys
from crossmodalnet._docs import docs

from ._utils import log_added, portable

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

_CALLER = "cmn.tl.covariate_probe"


def _probe_scores(
    x: np.ndarray, y: np.ndarray, *, n_splits: int, n_comps: int | None, c: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Balanced accuracy of each fold and the summed confusion matrix of a stratified k-fold probe."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n_classes = int(y.max()) + 1
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    scores, confusion = [], np.zeros((n_classes, n_classes), dtype=np.int64)
    for train, test in folds.split(x, y):
        steps = [StandardScaler()]
        n_pcs = None if n_comps is None else min(n_comps, x.shape[1], train.size - 1)
        if n_pcs is not None and n_pcs < x.shape[1]:
            steps.append(PCA(n_components=n_pcs, random_state=seed))
        probe = make_pipeline(*steps, LogisticRegression(C=c, max_iter=2000))
        probe.fit(x[train], y[train])
        pred = probe.predict(x[test])
        scores.append(balanced_accuracy_score(y[test], pred))
        confusion += confusion_matrix(y[test], pred, labels=np.arange(n_classes))
    return np.asarray(scores), confusion


@docs.dedent
def covariate_probe(
    mdata: MuData | AnnData,
    *,
    key: str,
    obsm_key: str = _keys.EMBEDDING_PREFIX + _keys.BASAL,
    n_splits: int = 5,
    n_comps: int | None = 50,
    c: float = 1.0,
    n_permutations: int = 0,
    seed: int = 0,
    key_added: str | None = None,
    copy: bool = False,
) -> MuData | AnnData | None:
    """Score how well a linear probe recovers a categorical covariate from an embedding.

    A logistic regression (embedding dimensions standardised, then PCA to ``n_comps`` dimensions, both fitted on the
    training folds only) predicts ``obs[key]`` from ``obsm[obsm_key]`` in stratified
    ``n_splits``-fold cross-validation; the score is the balanced accuracy on the held-out folds.
    Balanced accuracy is the mean recall over the categories, so its chance level is
    ``1 / n_categories`` whatever the category sizes.

    Read it as follows. On the basal latent (:func:`~crossmodalnet.tl.basal_embedding`), a score near
    ``chance`` means the covariate cannot be read linearly from the embedding. A score well above chance
    means it can; compare with the same probe on a PCA of the input (``obsm_key="X_pca"``) to see
    whether the model removed or added covariate information. Where cell types exist at one time point
    only, time is legitimately visible through cell type and no embedding that keeps the cell types can
    score near chance; probe within each cell type (subset ``mdata``) in that case. Probe on cells that
    the model did not train on (e.g. ``mdata[~mdata.obs_names.isin(model.training_cells)]``), since the
    adversary saw the training cells.

    Parameters
    ----------
    mdata
        MuData or AnnData with the embedding in ``.obsm`` and the covariate in ``.obs``.
    key
        Column of ``.obs`` holding the covariate (categorical, string or integer values).
    obsm_key
        Embedding to probe, e.g. ``"X_cmn_basal"`` (the default), ``"X_pca"`` or ``"X_totalVI"``.
    n_splits
        Number of cross-validation folds; every category needs at least that many cells.
    n_comps
        Principal components kept inside the probe (fitted per fold); ``None`` uses the embedding as is.
        Limits overfitting when the embedding has more dimensions than the folds have cells.
    c
        Inverse L2 penalty of :class:`~sklearn.linear_model.LogisticRegression`.
    n_permutations
        Also run the probe this many times on shuffled labels, giving an empirical chance level
        (``permutation_mean``, ``permutation_std``) and a permutation p-value. ``0`` skips it.
    seed
        Seed of the folds, of the PCA solver and of the label permutations.
    key_added
        Key in ``.uns``; ``None`` gives ``"cmn_probe_" + key``.
    %(copy)s

    Returns
    -------
    ``None``, or a copy if ``copy=True``. Sets ``mdata.uns[key_added]``, a dict with:

    ``balanced_accuracy``
        Mean over the folds (:class:`float`).
    ``balanced_accuracy_std``
        Standard deviation over the folds.
    ``per_fold``
        Balanced accuracy of each fold (array of length ``n_splits``).
    ``chance``
        ``1 / n_categories``.
    ``majority``
        Plain accuracy of always predicting the largest category.
    ``categories``, ``counts``
        Category names and their numbers of cells.
    ``confusion``
        Confusion matrix summed over folds (rows: true category, columns: predicted).
    ``permutation_mean``, ``permutation_std``, ``permutation_pvalue``
        Only with ``n_permutations > 0``.
    ``params``
        The arguments.

    Raises
    ------
    KeyError
        ``key`` is not in ``.obs`` or ``obsm_key`` is not in ``.obsm``.
    ValueError
        The covariate has missing values or a single category, a category has fewer than ``n_splits``
        cells, or the embedding has missing or infinite values.

    Examples
    --------
    >>> cmn.tl.basal_embedding(mdata, model)
    >>> test = mdata[~mdata.obs_names.isin(model.training_cells)].copy()
    >>> cmn.tl.covariate_probe(test, key="time")
    >>> test.uns["cmn_probe_time"]["balanced_accuracy"], test.uns["cmn_probe_time"]["chance"]
    """
    if not isinstance(key, str) or key not in mdata.obs.columns:
        raise KeyError(f"`key` {key!r} is not a column of `.obs`; choose one of {list(mdata.obs.columns)}.")
    if obsm_key not in mdata.obsm:
        raise KeyError(
            f"`obsm_key` {obsm_key!r} is not in `.obsm` (found {list(mdata.obsm)}); compute it first, e.g. "
            "with `cmn.tl.basal_embedding(mdata, model)` or `sc.pp.pca`."
        )
    if int(n_splits) != n_splits or n_splits < 2:
        raise ValueError(f"`n_splits` must be an integer of at least 2, got {n_splits!r}.")
    if n_comps is not None and (int(n_comps) != n_comps or n_comps < 1):
        raise ValueError(f"`n_comps` must be a positive integer or None, got {n_comps!r}.")
    if not c > 0:
        raise ValueError(f"`c` must be positive, got {c!r}.")
    if int(n_permutations) != n_permutations or n_permutations < 0:
        raise ValueError(f"`n_permutations` must be a non-negative integer, got {n_permutations!r}.")
    keys = _keys.Keys(f"cmn_probe_{key}" if key_added is None else key_added)

    labels = mdata.obs[key]
    if labels.isna().any():
        raise ValueError(
            f"`.obs[{key!r}]` has {int(labels.isna().sum())} missing values; subset to the cells that have one."
        )
    codes, categories = pd.factorize(labels.astype(str), sort=True)
    counts = np.bincount(codes, minlength=len(categories))
    if len(categories) < 2:
        raise ValueError(f"`.obs[{key!r}]` has a single category ({categories[0]!r}); there is nothing to probe.")
    if counts.min() < n_splits:
        small = {str(categories[i]): int(counts[i]) for i in np.flatnonzero(counts < n_splits)}
        raise ValueError(
            f"Every category of `.obs[{key!r}]` needs at least `n_splits`={n_splits} cells; {small} have fewer. "
            "Lower `n_splits` or drop those categories."
        )
    x = np.asarray(mdata.obsm[obsm_key], dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != mdata.n_obs:
        raise ValueError(f"`.obsm[{obsm_key!r}]` must be a cells × dimensions array, got shape {x.shape}.")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise ValueError(
            f"`.obsm[{obsm_key!r}]` has {int(bad.sum())} cells with NaN or infinite values (e.g. cells without "
            "RNA); subset to the other cells first."
        )

    fold_kwargs = {"n_splits": int(n_splits), "n_comps": n_comps, "c": float(c), "seed": int(seed)}
    per_fold, confusion = _probe_scores(x, codes, **fold_kwargs)
    result = {
        "balanced_accuracy": float(per_fold.mean()),
        "balanced_accuracy_std": float(per_fold.std()),
        "per_fold": per_fold,
        "chance": 1.0 / len(categories),
        "majority": float(counts.max() / counts.sum()),
        "categories": [str(cat) for cat in categories],
        "counts": counts,
        "confusion": confusion,
    }
    if n_permutations:
        rng = np.random.default_rng(seed)
        null = np.array(
            [_probe_scores(x, rng.permutation(codes), **fold_kwargs)[0].mean() for _ in range(n_permutations)]
        )
        result["permutation_mean"] = float(null.mean())
        result["permutation_std"] = float(null.std())
        result["permutation_pvalue"] = float((1 + (null >= result["balanced_accuracy"]).sum()) / (1 + null.size))
    result["params"] = {"key": key, "obsm_key": obsm_key, **fold_kwargs, "n_permutations": int(n_permutations)}

    if copy:
        mdata = mdata.copy()
    mdata.uns[keys.uns] = portable(result)
    log_added(
        _CALLER,
        [
            f"mdata.uns[{keys.uns!r}] (balanced accuracy {result['balanced_accuracy']:.3f}, "
            f"chance {result['chance']:.3f})"
        ],
    )
    return mdata if copy else None
