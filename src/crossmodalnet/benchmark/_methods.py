"""Benchmark methods behind one protocol: ``fit(X_train, Y_train, X_val, Y_val, time_train, time_val)`` and ``predict(X, time)``.

Every method sees the same inputs (log-normalised RNA, one time label per cell), the same split
and the same target scale. Choices that need data (Ridge's alpha, SVD rank, boosting rounds,
epochs) are made on the validation cells only; test cells are never looked at before scoring.

Two methods need more than the arrays: :class:`CrossmodalNetMethod` trains the real model on a
MuData of all cells with the model's own split (checked to equal the harness split) and
:class:`TotalVIMethod` is transductive (it trains on the test cells' RNA with their proteins
hidden). Both override :meth:`Method.fit_split` / :meth:`Method.predict_split`.
"""

from __future__ import annotations

import copy
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pandas as pd

from crossmodalnet._metrics import pearson_per_protein

from ._data import TRAIN_SIZE, VALIDATION_SIZE, time_column

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._data import BenchmarkData

logger = logging.getLogger(__name__)

RIDGE_ALPHAS = (0.1, 1.0, 10.0, 100.0, 1_000.0, 10_000.0)
SVD_RANKS = (32, 64, 128, 256)


@dataclass
class Split:
    """Train/validation/test indices of one setting, and how they were drawn."""

    setting: str
    seed: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def validation_score(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean per-protein Pearson correlation (the selection criterion on validation cells)."""
    r = pearson_per_protein(pred, true)
    return float(np.nanmean(r)) if np.isfinite(r).any() else -np.inf


def clr_rows(values: np.ndarray) -> np.ndarray:
    """Per-cell CLR exactly as :func:`muon.prot.pp.clr` (``axis=1``): ``log1p(x / exp(mean(log1p(x))))``."""
    values = np.clip(np.asarray(values, dtype=np.float64), 0.0, None)
    geo = np.exp(np.log1p(values).mean(axis=1, keepdims=True))
    return np.log1p(values / geo).astype(np.float32)


class Method(ABC):
    """Base class of the benchmark methods.

    Parameters
    ----------
    seed
        Seed of every random choice of the method.
    quick
        Tiny settings for smoke tests.
    threads
        CPU threads the method may use.
    max_epochs
        Epoch cap of the neural methods (they stop early on validation).
    """

    name: ClassVar[str] = ""
    uses_time: ClassVar[str] = ""
    """How the time point enters the method, in words (empty: it does not)."""
    transductive: ClassVar[bool] = False
    requires: ClassVar[tuple[str, ...]] = ()
    """Optional packages (import names) the method needs beyond the core dependencies."""

    def __init__(self, *, seed: int = 0, quick: bool = False, threads: int = 2, max_epochs: int = 500):
        self.seed = seed
        self.quick = quick
        self.threads = threads
        self.max_epochs = max_epochs
        self.time_categories: list | None = None
        self.info: dict = {}

    # --- array protocol ----------------------------------------------------------------------
    @abstractmethod
    def fit(
        self,
        X_train: np.ndarray,
        Y_train: np.ndarray,
        X_val: np.ndarray,
        Y_val: np.ndarray,
        time_train: np.ndarray,
        time_val: np.ndarray,
    ) -> Method:
        """Fit on the training cells; use the validation cells only for model selection."""

    @abstractmethod
    def predict(self, X: np.ndarray, time: np.ndarray) -> np.ndarray:
        """Predict proteins (cells × proteins) on the target scale."""

    # --- data-set protocol (what the harness calls) --------------------------------------------
    def fit_split(self, data: BenchmarkData, split: Split) -> Method:
        """Fit on ``split.train`` (selecting on ``split.val``) of ``data``."""
        self.time_categories = list(data.time_categories)
        tr, va = split.train, split.val
        return self.fit(data.X[tr], data.Y[tr], data.X[va], data.Y[va], data.time[tr], data.time[va])

    def predict_split(self, data: BenchmarkData, split: Split) -> np.ndarray:
        """Predict the test cells of ``split``."""
        return self.predict(data.X[split.test], data.time[split.test])

    # --- helpers ---------------------------------------------------------------------------------
    def _categories(self, *times: np.ndarray) -> list[str]:
        if self.time_categories is None:
            self.time_categories = sorted({str(t) for ts in times for t in np.asarray(ts)})
        return [str(c) for c in self.time_categories]

    def _onehot(self, time: np.ndarray) -> np.ndarray:
        """One column per known time point; a time point absent from training keeps an all-zero column."""
        cats = self._categories(time)
        if len(cats) <= 1:
            return np.zeros((len(time), 0), dtype=np.float32)
        codes = pd.Index(cats).get_indexer(pd.Series(np.asarray(time)).astype(str))
        out = np.zeros((len(time), len(cats)), dtype=np.float32)
        rows = np.flatnonzero(codes >= 0)
        out[rows, codes[rows]] = 1.0
        return out

    def _with_time(self, X: np.ndarray, time: np.ndarray) -> np.ndarray:
        return np.hstack([np.asarray(X, dtype=np.float32), self._onehot(time)])


class PerTimeMean(Method):
    """Reference: predict each cell as the mean training protein profile of its time point.

    It ignores RNA, so its per-cell Pearson shows how much of a method's per-cell Pearson comes
    from the average protein profile alone. A time point without training cells gets the mean of
    all training cells.
    """

    name = "per-time mean"
    uses_time = "its time point's mean (overall mean for an unseen time point)"

    def fit(self, X_train, Y_train, X_val, Y_val, time_train, time_val):
        t = pd.Series(np.asarray(time_train)).astype(str).to_numpy()
        self.overall_ = np.asarray(Y_train, dtype=np.float32).mean(axis=0)
        self.means_ = {u: np.asarray(Y_train)[t == u].mean(axis=0) for u in np.unique(t)}
        return self

    def predict(self, X, time):
        t = pd.Series(np.asarray(time)).astype(str).to_numpy()
        return np.vstack([self.means_.get(u, self.overall_) for u in t]).astype(np.float32)


class LinearRegressionMethod(Method):
    """Ordinary least squares (:class:`sklearn.linear_model.LinearRegression`, defaults as in the paper).

    With more genes than training cells this is the minimum-norm least-squares solution.
    """

    name = "Linear regression"
    uses_time = "one-hot time appended to RNA"

    def fit(self, X_train, Y_train, X_val, Y_val, time_train, time_val):
        from sklearn.linear_model import LinearRegression

        self._categories(time_train, time_val)
        self.model_ = LinearRegression().fit(self._with_time(X_train, time_train), Y_train)
        return self

    def predict(self, X, time):
        return self.model_.predict(self._with_time(X, time)).astype(np.float32)


class RidgeMethod(Method):
    """Ridge regression (:class:`sklearn.linear_model.Ridge`), alpha chosen on the validation cells.

    The alpha grid is ``RIDGE_ALPHAS``; the criterion is mean per-protein Pearson on validation.
    The model fitted on the training cells with the best alpha is kept (not refitted).
    """

    name = "Ridge"
    uses_time = "one-hot time appended to RNA"

    def fit(self, X_train, Y_train, X_val, Y_val, time_train, time_val):
        from sklearn.linear_model import Ridge

        self._categories(time_train, time_val)
        A, B = self._with_time(X_train, time_train), self._with_time(X_val, time_val)
        alphas = (1.0, 100.0) if self.quick else RIDGE_ALPHAS
        best = None
        for alpha in alphas:
            model = Ridge(alpha=alpha).fit(A, Y_train)
            score = validation_score(model.predict(B), Y_val)
            if best is None or score > best[0]:
                best = (score, alpha, model)
        self.model_ = best[2]
        self.info = {"alpha": best[1], "val_pearson_protein": best[0]}
        return self

    def predict(self, X, time):
        return self.model_.predict(self._with_time(X, time)).astype(np.float32)


class SVDRidgeMethod(Method):
    """Standardised genes → :class:`~sklearn.decomposition.TruncatedSVD` → Ridge.

    The scaler and the SVD are fitted on the training cells; the rank (from ``SVD_RANKS``) and
    alpha are chosen together on the validation cells.
    """

    name = "TruncatedSVD+Ridge"
    uses_time = "one-hot time appended to the SVD components"

    def fit(self, X_train, Y_train, X_val, Y_val, time_train, time_val):
        from sklearn.decomposition import TruncatedSVD
        from sklearn.linear_model import Ridge
        from sklearn.preprocessing import StandardScaler

        self._categories(time_train, time_val)
        ranks = (8, 16) if self.quick else SVD_RANKS
        n_comp = int(min(max(ranks), X_train.shape[0] - 1, X_train.shape[1] - 1))
        self.scaler_ = StandardScaler().fit(X_train)
        self.svd_ = TruncatedSVD(n_components=n_comp, random_state=self.seed).fit(self.scaler_.transform(X_train))
        Z_tr = self.svd_.transform(self.scaler_.transform(X_train))
        Z_va = self.svd_.transform(self.scaler_.transform(X_val))
        oh_tr, oh_va = self._onehot(time_train), self._onehot(time_val)
        alphas = (1.0, 100.0) if self.quick else RIDGE_ALPHAS
        best = None
        for k in sorted({min(r, n_comp) for r in ranks}):
            A, B = np.hstack([Z_tr[:, :k], oh_tr]), np.hstack([Z_va[:, :k], oh_va])
            for alpha in alphas:
                model = Ridge(alpha=alpha).fit(A, Y_train)
                score = validation_score(model.predict(B), Y_val)
                if best is None or score > best[0]:
                    best = (score, k, alpha, model)
        self.rank_, self.model_ = best[1], best[3]
        self.info = {"rank": best[1], "alpha": best[2], "val_pearson_protein": best[0]}
        return self

    def predict(self, X, time):
        Z = self.svd_.transform(self.scaler_.transform(X))[:, : self.rank_]
        return self.model_.predict(np.hstack([Z, self._onehot(time)])).astype(np.float32)


class LightGBMMethod(Method):
    """LightGBM, one booster per protein, boosting rounds chosen by early stopping on validation.

    Fixed, reasonable parameters (learning rate 0.1, 31 leaves, 30% of genes per tree, 63 bins)
    and at most 300 rounds (early stopping after 20 rounds without improvement of validation MSE).
    The paper tuned LightGBM by randomized cross-validation; that is not repeated here (cost).
    The binned training matrix is built once and shared by all proteins.
    """

    name = "LightGBM"
    uses_time = "one-hot time appended to RNA"
    requires = ("lightgbm",)

    def _params(self) -> dict:
        return {
            "objective": "regression",
            "learning_rate": 0.1,
            "num_leaves": 31,
            "min_data_in_leaf": 10 if self.quick else 20,
            "feature_fraction": 0.3,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "lambda_l2": 1.0,
            "max_bin": 63,
            "num_threads": self.threads,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "feature_pre_filter": False,
            "verbose": -1,
        }

    def fit(self, X_train, Y_train, X_val, Y_val, time_train, time_val):
        lgb = import_optional("lightgbm")

        self._categories(time_train, time_val)
        params = self._params()
        rounds = 20 if self.quick else 300
        dtrain = lgb.Dataset(
            self._with_time(X_train, time_train), label=Y_train[:, 0], params=params, free_raw_data=False
        ).construct()
        dval = lgb.Dataset(
            self._with_time(X_val, time_val), label=Y_val[:, 0], params=params, reference=dtrain, free_raw_data=False
        ).construct()
        self.boosters_, best = [], []
        for j in range(Y_train.shape[1]):
            dtrain.set_label(Y_train[:, j])
            dval.set_label(Y_val[:, j])
            booster = lgb.train(
                params,
                dtrain,
                num_boost_round=rounds,
                valid_sets=[dval],
                callbacks=[lgb.early_stopping(5 if self.quick else 20, verbose=False)],
            )
            self.boosters_.append(booster)
            best.append(booster.best_iteration or rounds)
        self.info = {"rounds_median": float(np.median(best)), "rounds_max_cap": rounds}
        return self

    def predict(self, X, time):
        A = self._with_time(X, time)
        cols = [b.predict(A, num_iteration=b.best_iteration or None) for b in self.boosters_]
        return np.column_stack(cols).astype(np.float32)


class MLPMethod(Method):
    """A plain torch MLP (genes + one-hot time → 512 → 256 → proteins), early-stopped on validation.

    Batch normalisation, ReLU, dropout 0.1; Adam with the paper's MLP defaults (lr 1e-3, weight
    decay 5e-6), mini-batches of 256. Training stops when validation mean per-protein Pearson has
    not improved for 10 epochs and the best epoch's weights are restored.

    Parameters
    ----------
    loss
        ``"mse"`` or ``"nlc"`` (negative log-correlation per cell,
        :func:`crossmodalnet.train.nlc_loss`).
    **kwargs
        Passed to :class:`Method`.
    """

    uses_time = "one-hot time appended to RNA"

    def __init__(self, *, loss: str = "mse", **kwargs):
        super().__init__(**kwargs)
        if loss not in ("mse", "nlc"):
            raise ValueError(f"`loss` must be 'mse' or 'nlc', got {loss!r}.")
        self.loss = loss
        self.hidden = (32, 16) if self.quick else (512, 256)
        self.patience = 3 if self.quick else 10
        self.batch_size = 64 if self.quick else 256

    @property
    def display_name(self) -> str:
        """``"MLP+MSE"`` or ``"MLP+NLC"``."""
        return f"MLP+{self.loss.upper()}"

    def _net(self, n_in: int, n_out: int):
        from torch import nn

        layers: list = []
        for h in self.hidden:
            layers += [nn.Linear(n_in, h), nn.BatchNorm1d(h), nn.ReLU(), nn.Dropout(0.1)]
            n_in = h
        layers.append(nn.Linear(n_in, n_out))
        return nn.Sequential(*layers)

    def fit(self, X_train, Y_train, X_val, Y_val, time_train, time_val):
        import torch
        from torch.nn import functional as F

        from crossmodalnet.train import nlc_loss

        self._categories(time_train, time_val)
        torch.manual_seed(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        A = torch.from_numpy(self._with_time(X_train, time_train))
        B = torch.from_numpy(self._with_time(X_val, time_val))
        Yt = torch.from_numpy(np.asarray(Y_train, dtype=np.float32))
        Yv = np.asarray(Y_val, dtype=np.float32)
        self.net_ = self._net(A.shape[1], Yt.shape[1])
        opt = torch.optim.Adam(self.net_.parameters(), lr=1e-3, weight_decay=5e-6)
        max_epochs = min(self.max_epochs, 5) if self.quick else self.max_epochs
        best_score, best_state, best_epoch, epoch = -np.inf, None, 0, 0
        for epoch in range(1, max_epochs + 1):
            self.net_.train()
            perm = torch.randperm(A.shape[0], generator=gen)
            for start in range(0, A.shape[0], self.batch_size):
                idx = perm[start : start + self.batch_size]
                if idx.numel() < 2:  # batch norm needs two cells
                    continue
                pred = self.net_(A[idx])
                loss = F.mse_loss(pred, Yt[idx]) if self.loss == "mse" else nlc_loss(pred, Yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            self.net_.eval()
            with torch.inference_mode():
                score = validation_score(self.net_(B).numpy(), Yv)
            if score > best_score:
                best_score, best_epoch = score, epoch
                best_state = copy.deepcopy(self.net_.state_dict())
            elif epoch - best_epoch >= self.patience:
                break
        if best_state is not None:
            self.net_.load_state_dict(best_state)
        self.net_.eval()
        self.info = {"epochs": epoch, "best_epoch": best_epoch, "val_pearson_protein": best_score}
        return self

    def predict(self, X, time):
        import torch

        out = []
        with torch.inference_mode():
            A = self._with_time(X, time)
            for start in range(0, A.shape[0], 4096):
                out.append(self.net_(torch.from_numpy(A[start : start + 4096])).numpy())
        return np.vstack(out).astype(np.float32)


class CrossmodalNetMethod(Method):
    """The package's :class:`~crossmodalnet.model.CrossmodalNet` with a preset's settings.

    ``preset="default"`` (method key ``crossmodalnet``) is the default model with its linear ridge
    path; ``preset="paper"`` (``crossmodalnet_paper``) is the paper's model with Table S1 settings.

    :meth:`fit_split` registers a MuData of all cells and calls ``model.train`` with the split
    kind and seed of the harness; the model draws its split with the same functions, and the
    train/validation/test indices are checked to equal the harness's (a mismatch raises). Early
    stopping (patience 10) monitors validation mean per-protein Pearson, the same criterion the
    MLP baselines use. For a held-out time point the model interpolates its time embedding.

    Parameters
    ----------
    n_latent
        Latent dimension (Table S1: 512).
    monitor
        ``early_stopping_monitor`` of :meth:`~crossmodalnet.model.CrossmodalNet.train`.
    small_data_recipe
        Train with the small-data recipe instead of the preset's settings:
        ``standardize_protein=True``, ``input_group_lasso=1e-4`` and an early-stopping patience of 50
        (see the section *Small data sets (paper preset)* of the docs page *Development notes*).
    preset
        ``preset`` of :class:`~crossmodalnet.model.CrossmodalNet`.
    **kwargs
        Passed to :class:`Method`.
    """

    name = "CrossmodalNet"
    recipe_name = "CrossmodalNet (small-data recipe)"
    paper_name = "CrossmodalNet (paper preset)"
    uses_time = "learned time embedding (interpolated for a held-out time point)"

    def __init__(
        self,
        *,
        n_latent: int | None = None,
        monitor: str = "pearson_protein_validation",
        small_data_recipe: bool = False,
        preset: str = "default",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.n_latent = n_latent if n_latent is not None else (16 if self.quick else 512)
        self.monitor = monitor
        self.small_data_recipe = small_data_recipe
        self.preset = preset
        if small_data_recipe:
            self.name = self.recipe_name
        elif preset == "paper":
            self.name = self.paper_name

    def fit(self, X_train, Y_train, X_val, Y_val, time_train, time_val):
        """Fit on arrays: train on ``X_train`` and early-stop on ``X_val`` (a train-then-validation MuData).

        The harness uses :meth:`fit_split` instead, so that the model's own split is used and checked.
        """
        from ._data import BenchmarkData

        n_tr = len(X_train)
        times = np.concatenate([np.asarray(time_train, dtype=object), np.asarray(time_val, dtype=object)])
        cats = self._categories(time_train, time_val)
        data = BenchmarkData(
            name="arrays",
            X=np.vstack([X_train, X_val]).astype(np.float32),
            Y=np.vstack([Y_train, Y_val]).astype(np.float32),
            time=times,
            time_categories=list(self.time_categories or cats),
            time_role="given",
            gene_names=pd.Index([f"g{i}" for i in range(X_train.shape[1])]),
            protein_names=pd.Index([f"p{i}" for i in range(Y_train.shape[1])]),
            obs_names=pd.Index([f"c{i}" for i in range(len(times))]),
            has_time=len(cats) > 1,
        )
        return self._train(data, external=(np.arange(n_tr), np.arange(n_tr, len(times))))

    def fit_split(self, data, split):
        self.time_categories = list(data.time_categories)
        return self._train(data, split=split)

    def _train(self, data: BenchmarkData, *, split: Split | None = None, external=None) -> CrossmodalNetMethod:
        import scvi
        import torch

        from crossmodalnet.model import CrossmodalNet

        mdata = data.to_mudata()
        scvi.settings.seed = self.seed
        torch.manual_seed(self.seed)
        CrossmodalNet.setup_mudata(mdata, time_key="time" if data.has_time else None)
        model = CrossmodalNet(
            mdata, preset=self.preset, n_latent=self.n_latent, standardize_protein=self.small_data_recipe or None
        )
        patience = 50 if self.small_data_recipe else None
        kwargs = {
            "batch_size": 64 if self.quick else 256,
            "early_stopping_patience": 3 if self.quick else patience,
            "input_group_lasso": 1e-4 if self.small_data_recipe else 0.0,
            "early_stopping_monitor": self.monitor,
            "accelerator": "cpu",
            "enable_progress_bar": False,
            "enable_model_summary": False,
        }
        max_epochs = min(self.max_epochs, 3) if self.quick else self.max_epochs
        if split is not None:
            if split.setting == "heldout_time":
                kwargs.update(split="holdout_time", holdout_time=data.holdout)
            else:
                kwargs.update(split="random")
            model.train(
                max_epochs,
                train_size=TRAIN_SIZE,
                validation_size=VALIDATION_SIZE,
                split_seed=split.seed,
                **kwargs,
            )
            for what, mine, theirs in (
                ("train", split.train, model.train_indices),
                ("validation", split.val, model.validation_indices),
                ("test", split.test, model.test_indices),
            ):
                if not np.array_equal(np.sort(np.asarray(theirs)), np.sort(mine)):
                    raise RuntimeError(
                        f"CrossmodalNet drew a different {what} split than the benchmark harness "
                        f"({len(theirs)} vs {len(mine)} cells); the comparison would be unfair."
                    )
        else:
            # Arrays: the caller fixed which cells train and which validate (no test cells).
            train_idx, val_idx = external
            fixed = [np.asarray(train_idx, dtype=np.int64), np.asarray(val_idx, dtype=np.int64), np.array([], np.int64)]
            model.train(max_epochs, split_seed=self.seed, datasplitter_kwargs={"external_indexing": fixed}, **kwargs)
        self.model_ = model
        self.gene_names_ = data.gene_names
        history = model.history or {}
        n_epochs = len(next(iter(history.values()))) if history else 0
        self.info = {
            "epochs": n_epochs,
            "best_epoch": model.split_.get("best_epoch"),
            "n_latent": self.n_latent,
            "monitor": self.monitor,
            "small_data_recipe": self.small_data_recipe,
            "preset": self.preset,
        }
        return self

    def predict(self, X, time):
        import anndata as ad
        import mudata as md

        names = pd.Index([f"c{i}" for i in range(len(X))])
        rna = ad.AnnData(np.asarray(X, dtype=np.float32), obs=pd.DataFrame(index=names))
        rna.var_names = self.gene_names_
        mdata = md.MuData({"rna": rna})
        mdata.obs["time"] = time_column(time, self.time_categories or sorted({str(t) for t in time}))
        return self.model_.predict_protein(mdata).to_numpy(dtype=np.float32)


class TotalVIMethod(Method):
    """totalVI (:class:`scvi.model.TOTALVI`) with the standard imputation recipe (transductive).

    One model is trained on the raw counts of all cells: training and validation cells with their
    protein counts, test cells with their protein counts set to zero and in a batch of their own,
    so totalVI treats their proteins as missing (``MuDataProteinLayerField(use_batch_mask=True)``).
    Reference cells are batched by time point, so totalVI also sees time. The validation cells
    drive early stopping on the validation ELBO. Denoised protein expression of the test cells
    (``get_normalized_expression``, no background) is decoded with ``transform_batch`` = the cell's
    own time point (in-distribution) or averaged over all training time points (held-out time, one
    pseudo time point), then mapped to the evaluation scale with the target's per-cell CLR
    (:func:`clr_rows`). Prediction throughput counts only that decoding pass.
    """

    name = "totalVI"
    uses_time = "time point as totalVI batch of the reference cells (test cells: a query batch)"
    transductive = True

    def fit(self, X_train, Y_train, X_val, Y_val, time_train, time_val):
        raise TypeError("totalVI needs raw counts and the test cells' RNA: use `fit_split` on a BenchmarkData.")

    def predict(self, X, time):
        raise TypeError("totalVI is transductive: use `predict_split` after `fit_split`.")

    def fit_split(self, data, split):
        import anndata as ad
        import mudata as md
        import scvi
        import torch
        from scipy import sparse

        if data.rna_counts is None or data.protein_counts is None:
            raise RuntimeError(f"{data.name} has no raw counts")
        scvi.settings.seed = self.seed
        torch.manual_seed(self.seed)
        n = data.n_obs
        is_test = np.zeros(n, dtype=bool)
        is_test[split.test] = True
        batch = np.where(is_test, "query", np.char.add("ref_", np.asarray(data.time).astype(str)))
        # dense: scvi-tools 1.4 indexes the protein matrix with a np.matrix mask, which fails on sparse input
        prot_counts = np.asarray(data.protein_counts.toarray(), dtype=np.float32)
        prot_counts[is_test] = 0.0
        obs = pd.DataFrame({"tvi_batch": pd.Categorical(batch)}, index=data.obs_names.copy())
        rna = ad.AnnData(sparse.csr_matrix(data.rna_counts), obs=obs.copy(), var=pd.DataFrame(index=data.gene_names))
        prot = ad.AnnData(prot_counts, obs=obs.copy(), var=pd.DataFrame(index=data.protein_names))
        mdata = md.MuData({"rna": rna, "prot": prot})
        scvi.model.TOTALVI.setup_mudata(
            mdata,
            batch_key="tvi_batch",
            modalities={"rna_layer": "rna", "protein_layer": "prot", "batch_key": "rna"},
        )
        model = scvi.model.TOTALVI(mdata, n_latent=5 if self.quick else 20)
        heuristic = int(min(round(20_000 / n * 400), 400))
        max_epochs = 3 if self.quick else min(self.max_epochs, heuristic)
        train_idx = np.sort(np.concatenate([split.train, split.test]))
        model.train(
            max_epochs=max_epochs,
            accelerator="cpu",
            batch_size=256,
            early_stopping=True,
            external_indexing=[train_idx, np.sort(split.val), np.array([], dtype=np.int64)],
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        self.model_ = model
        self.ref_batches_ = sorted({b for b in batch if b != "query"})
        history = model.history or {}
        n_epochs = len(history["elbo_train"]) if "elbo_train" in history else max_epochs
        self.info = {"epochs": n_epochs, "max_epochs": max_epochs}
        return self

    def transform_batches(self, data: BenchmarkData, split: Split, test: np.ndarray) -> tuple[np.ndarray, dict]:
        """Group of each test cell and the reference batch(es) each group is decoded as.

        In-distribution with several time points, a cell is decoded as its own time point's reference
        batch; otherwise every cell is decoded as (the average of) all reference batches.
        """
        if split.setting == "in_distribution" and len(self.ref_batches_) > 1:
            groups = pd.Series(np.asarray(data.time)[test]).astype(str).to_numpy()
            return groups, {g: f"ref_{g}" for g in np.unique(groups)}
        groups = np.full(test.size, "all")
        return groups, {"all": self.ref_batches_ if len(self.ref_batches_) > 1 else self.ref_batches_[0]}

    def predict_split(self, data, split):
        test = np.asarray(split.test)
        out = np.zeros((test.size, data.Y.shape[1]), dtype=np.float32)
        groups, targets = self.transform_batches(data, split, test)
        for g, tb in targets.items():
            rows = np.flatnonzero(groups == g)
            _, prot = self.model_.get_normalized_expression(
                indices=test[rows],
                transform_batch=tb,
                n_samples=1,
                include_protein_background=False,
                sample_protein_mixing=False,
                return_mean=True,
                return_numpy=True,
            )
            out[rows] = clr_rows(prot)
        return out


METHODS: dict[str, tuple[type[Method], dict]] = {
    "per_time_mean": (PerTimeMean, {}),
    "linear": (LinearRegressionMethod, {}),
    "ridge": (RidgeMethod, {}),
    "svd_ridge": (SVDRidgeMethod, {}),
    "lightgbm": (LightGBMMethod, {}),
    "mlp_mse": (MLPMethod, {"loss": "mse"}),
    "mlp_nlc": (MLPMethod, {"loss": "nlc"}),
    "crossmodalnet": (CrossmodalNetMethod, {}),
    "crossmodalnet_paper": (CrossmodalNetMethod, {"preset": "paper"}),
    "crossmodalnet_small_data": (CrossmodalNetMethod, {"preset": "paper", "small_data_recipe": True}),
    "totalvi": (TotalVIMethod, {}),
}
"""Method keys (as given to ``--methods``) → class and its keyword arguments."""


def method_display_name(key: str) -> str:
    """Table name of a method key."""
    cls, kwargs = METHODS[key]
    if cls is MLPMethod:
        return f"MLP+{kwargs['loss'].upper()}"
    if cls is CrossmodalNetMethod and kwargs.get("small_data_recipe"):
        return CrossmodalNetMethod.recipe_name
    if cls is CrossmodalNetMethod and kwargs.get("preset") == "paper":
        return CrossmodalNetMethod.paper_name
    return cls.name


BENCHMARK_EXTRA = "pip install 'crossmodalnet-tools[benchmark]'"
"""How to install the optional packages of the benchmark methods."""


def import_optional(name: str):
    """Import the optional package ``name`` or raise an :class:`ImportError` that says how to install it.

    Parameters
    ----------
    name
        Import name of the package (e.g. ``"lightgbm"``).

    Returns
    -------
    The imported module.
    """
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ImportError(f"The benchmark needs the optional package {name!r}: {BENCHMARK_EXTRA}.") from err


def check_requirements(keys: Sequence[str]) -> None:
    """Raise an :class:`ImportError` naming the benchmark extra if a method in ``keys`` lacks an optional package.

    Parameters
    ----------
    keys
        Method keys of ``METHODS``.
    """
    from importlib.util import find_spec

    missing = {
        name: [k for k in keys if name in METHODS[k][0].requires]
        for k in keys
        for name in METHODS[k][0].requires
        if find_spec(name) is None
    }
    if missing:
        needs = "; ".join(f"{name} (for {', '.join(ks)})" for name, ks in missing.items())
        raise ImportError(f"Optional packages missing: {needs}. Install them with {BENCHMARK_EXTRA}.")


def make_method(key: str, **kwargs) -> Method:
    """Build the method ``key`` of ``METHODS``; ``kwargs`` go to :class:`Method`."""
    if key not in METHODS:
        raise ValueError(f"Unknown method {key!r}; choose from {list(METHODS)}.")
    cls, extra = METHODS[key]
    return cls(**extra, **kwargs)


def parse_methods(methods: str | Sequence[str] | None) -> list[str]:
    """Method keys from a comma-separated string or a list (``None``: all)."""
    if methods is None:
        return list(METHODS)
    keys = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else [str(m) for m in methods]
    unknown = [k for k in keys if k not in METHODS]
    if unknown:
        raise ValueError(f"Unknown method(s) {unknown}; choose from {list(METHODS)}.")
    return keys
