"""The CrossmodalNet model class: MuData registry, training, getters, save/load."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import torch
from mudata import MuData
from scipy import sparse
from scvi import settings
from scvi.data import AnnDataManager, fields
from scvi.dataloaders import DataSplitter
from scvi.model.base import BaseModelClass
from scvi.train import TrainRunner

from crossmodalnet._constants import DEFAULT_PROTEIN_KEY, DEFAULT_RNA_KEY, REGISTRY_KEYS
from crossmodalnet._utils import (
    check_aligned_cells,
    check_finite,
    check_unique_names,
    get_layer,
    get_modality,
    looks_like_counts,
    zero_variance_columns,
)
from crossmodalnet.module import CrossmodalModule
from crossmodalnet.train import FaderGradNormPlan, RestoreBestWeights
from crossmodalnet.train._plan import check_input_group_lasso

from ._split import holdout_split, stratified_split
from ._uncertainty import ProteinUncertainty, UncertaintyMixin

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from anndata import AnnData

logger = logging.getLogger(__name__)

_MONITORS = ("pearson_cell_validation", "pearson_protein_validation")
_MANIFEST = "crossmodalnet.json"
_FORMAT_NAME = "crossmodalnet-model"
_FORMAT_VERSION = 1


def _package_version() -> str:
    from crossmodalnet import __version__

    return __version__


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify_model_dir(path: Path, prefix: str | None) -> None:
    """Check a saved-model folder before loading; name what is wrong and how to fix it."""
    if not path.is_dir():
        raise FileNotFoundError(f"No saved model at {path}: the folder does not exist.")
    manifest_path = path / _MANIFEST
    if not manifest_path.is_file():
        raise ValueError(
            f"{path} is not a complete crossmodalnet model folder: {_MANIFEST} is missing "
            "(an interrupted save, or a folder written by another tool). Save the model again."
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{manifest_path} is corrupted ({err}); save the model again.") from None
    if manifest.get("format") != _FORMAT_NAME or manifest.get("format_version") != _FORMAT_VERSION:
        raise ValueError(
            f"{path} holds model format {manifest.get('format')!r} version {manifest.get('format_version')!r}, "
            f"written by crossmodalnet {manifest.get('crossmodalnet_version')!r}; this crossmodalnet "
            f"({_package_version()}) reads {_FORMAT_NAME!r} version {_FORMAT_VERSION}. Load it with the version that "
            "saved it and retrain, or save it again."
        )
    if (prefix or "") != manifest.get("prefix", ""):
        raise ValueError(f"{path} was saved with prefix {manifest.get('prefix')!r}, not {prefix!r}.")
    for name, expected in manifest.get("sha256", {}).items():
        file = path / name
        if not file.is_file():
            raise ValueError(f"{path} is incomplete: {name} is missing. Save the model again.")
        if _sha256(file) != expected:
            raise ValueError(f"{path / name} does not match its checksum: the file is corrupted or was modified.")


def _factorize(values: pd.Series) -> tuple[np.ndarray, list]:
    """Integer code of each value (-1 for missing) and the distinct values present, without per-cell strings."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    return codes.astype(np.int64), list(uniques)


def _is_data_parallel(strategy: object) -> bool:
    """Whether a Lightning ``strategy`` argument asks for distributed data parallel training."""
    if strategy is None:
        return False
    if isinstance(strategy, str):
        return "ddp" in strategy
    from lightning.pytorch.strategies import DDPStrategy

    return isinstance(strategy, DDPStrategy)


class CrossmodalNet(UncertaintyMixin, BaseModelClass):
    """Predict surface proteins from RNA with a time-aware Fader network :cite:p:`Yang2023`.

    MLP1 encodes genes into a basal latent ``z``; a learnable embedding of the time point
    (and of the batch, if registered) is added to ``z``; MLP2 decodes the sum into proteins.
    Discriminators predict time (and batch) from ``z`` and the encoder is trained against them,
    so ``z`` carries no time information. The loss is ``w1·NLC + w2·(MSE − λ·CE)`` with ``w1, w2``
    balanced by GradNorm. Unseen time points between two trained ones are predicted from the
    linear interpolation of their embeddings.

    Parameters
    ----------
    mdata
        MuData registered with :meth:`~crossmodalnet.model.CrossmodalNet.setup_mudata`.
    n_latent
        Dimension of the basal latent and of the time embedding (Table S1: 512).
    dropout_rate
        Dropout in MLP1 (Table S1: 0.05).
    use_batch_norm
        Batch normalisation in the MLP blocks (Table S1: True).
    n_hidden_discriminator
        Hidden units of each discriminator (Table S1: 128).
    lambda_dis
        Weight of the adversarial term (Table S1 "regularization": 0.5).
    standardize_input
        Centre and scale every gene by its mean and standard deviation over the training cells
        before MLP1. The statistics are fitted at the first ``train`` call (training cells
        only, never validation or test cells) and saved with the model. Off by default: on
        ``synthetic_cite`` it lowered validation per-protein Pearson (it amplifies barely expressed,
        noisy genes).
    input_reduction
        Optional input reduction before MLP1, fitted on the training cells at the first
        :meth:`train` call and saved with the model; the model still takes all registered genes.
        ``"hvg"``: keep the ``n_input_features`` most variable genes of the training cells
        (:func:`scanpy.pp.highly_variable_genes`, ``flavor="seurat"`` on the registered
        log-normalised RNA); the other genes get zero saliency. ``"svd"``: project onto the first
        ``n_input_features`` components of a :class:`~sklearn.decomposition.TruncatedSVD` of the
        training cells. Fewer input features shrink the first layer (the largest) and speed up
        training on 10⁴–10⁵ genes. ``None`` (default): all genes, as in the paper.
    n_input_features
        Features kept by ``input_reduction``: default 2,000 for ``"hvg"`` and 256 for ``"svd"``.
    standardize_protein
        Train on proteins centred and scaled by their mean and standard deviation over the
        training cells (fitted at the first :meth:`train` call, saved with the model). The losses
        are then computed on that scale, so each protein weighs the same in the MSE, as it does in
        per-protein Pearson; predictions are still returned on the registered scale. Off by
        default (the paper trains on the registered scale). Part of the small-data recipe, with
        ``train(input_group_lasso=...)``: see the docs page *Small data sets*.
    registry
        Used by :meth:`load` to build a model without data; leave unset.

    Examples
    --------
    >>> import crossmodalnet as cmn
    >>> mdata = cmn.datasets.synthetic_cite(n_obs=500, n_genes=200, n_proteins=10)
    >>> cmn.pp.log_normalize(mdata)
    >>> cmn.pp.clr(mdata)
    >>> cmn.model.CrossmodalNet.setup_mudata(mdata, time_key="time")
    >>> model = cmn.model.CrossmodalNet(mdata, n_latent=64)
    >>> model.train(max_epochs=20)
    >>> proteins = model.predict_protein()
    >>> z = model.get_latent_representation()

    Notes
    -----
    See the getting-started tutorial for a complete workflow.

    Reproducibility: on CPU, the same ``scvi.settings.seed``, data and arguments give identical
    weights, histories and predictions (tested). On GPU, some CUDA kernels (atomic adds in
    backward passes, cuBLAS reductions) are not deterministic, so results can differ in the last
    digits between runs; ``model.train(..., deterministic=True)`` asks Lightning for deterministic
    algorithms at some speed cost. Inputs are used as registered:
    register log-normalised RNA and normalised (CLR or DSB) proteins, e.g. with
    :func:`crossmodalnet.pp.log_normalize` and :func:`crossmodalnet.pp.clr`.
    """

    _module_cls = CrossmodalModule
    _training_plan_cls = FaderGradNormPlan
    _data_splitter_cls = DataSplitter
    _train_runner_cls = TrainRunner

    def __init__(
        self,
        mdata: MuData | None = None,
        *,
        n_latent: int = 512,
        dropout_rate: float = 0.05,
        use_batch_norm: bool = True,
        n_hidden_discriminator: int = 128,
        lambda_dis: float = 0.5,
        standardize_input: bool = False,
        input_reduction: Literal["hvg", "svd"] | None = None,
        n_input_features: int | None = None,
        standardize_protein: bool = False,
        registry: dict | None = None,
    ):
        super().__init__(mdata, registry=registry)
        if input_reduction is not None and n_input_features is None:
            n_input_features = {"hvg": 2000, "svd": 256}.get(input_reduction)
        n_time = self.summary_stats[f"n_{REGISTRY_KEYS.TIME_KEY}"]
        n_batch = self.summary_stats[f"n_{REGISTRY_KEYS.BATCH_KEY}"]
        self.module = self._module_cls(
            n_input=self.summary_stats["n_vars"],
            n_output=self.summary_stats[f"n_{REGISTRY_KEYS.PROTEIN_KEY}"],
            n_cats_per_cov=[n_time, n_batch],
            n_latent=n_latent,
            dropout_rate=dropout_rate,
            use_batch_norm=use_batch_norm,
            n_hidden_discriminator=n_hidden_discriminator,
            lambda_dis=lambda_dis,
            standardize_input=standardize_input,
            input_reduction=input_reduction,
            n_input_features=n_input_features,
            standardize_protein=standardize_protein,
        )
        self.split_: dict = {}
        self.trained_time_codes_: np.ndarray | None = None
        self._model_summary_string = (
            f"CrossmodalNet: {self.n_genes} genes → {self.n_proteins} proteins, n_latent={n_latent}, "
            f"{n_time} time point(s), {n_batch} batch(es)"
            + ("" if input_reduction is None else f", input {input_reduction} → {n_input_features} features")
            + (", standardised proteins" if standardize_protein else "")
        )
        self.init_params_ = self._get_init_params(locals())

    # --- registration ------------------------------------------------------------------------
    @classmethod
    def setup_mudata(
        cls,
        mdata: MuData,
        *,
        rna_key: str = DEFAULT_RNA_KEY,
        protein_key: str = DEFAULT_PROTEIN_KEY,
        rna_layer: str | None = None,
        protein_layer: str | None = None,
        time_key: str | None = None,
        batch_key: str | None = None,
        **kwargs,
    ) -> None:
        """Register the RNA and protein modalities and the time (and batch) covariates.

        Nothing is computed into ``mdata.obs``; scvi-tools' :class:`~scvi.data.AnnDataManager`
        records its registry (its usual ``_scvi_*`` bookkeeping entries).

        Parameters
        ----------
        mdata
            CITE-seq MuData with RNA and protein modalities over the same cells.
        rna_key
            Modality holding RNA (the model input), e.g. log-normalised expression.
        protein_key
            Modality holding proteins (the target), e.g. CLR- or DSB-normalised.
        rna_layer
            Layer of the RNA modality; ``None`` uses ``.X``.
        protein_layer
            Layer of the protein modality; ``None`` uses ``.X``.
        time_key
            Column of ``mdata.obs`` with the time point. Numeric values (or an ordered
            categorical) define the time order used for interpolation. ``None``: one time point,
            no discriminator.
        batch_key
            Optional column of ``mdata.obs`` with a second covariate (donor, batch); it gets its
            own embedding and its own discriminator.
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields`.
        """
        # first statement: only the call's arguments may enter the saved registry
        setup_method_args = cls._get_setup_method_args(**locals())
        caller = "CrossmodalNet.setup_mudata"
        if not isinstance(mdata, MuData):
            raise TypeError(f"{caller} expects a MuData with RNA and protein modalities, got {type(mdata).__name__}.")
        rna = get_modality(mdata, rna_key, caller, role="RNA")
        prot = get_modality(mdata, protein_key, caller, role="protein")
        check_aligned_cells(mdata, [rna_key, protein_key])
        check_unique_names(rna.var_names, "gene", rna_key)
        check_unique_names(prot.var_names, "protein", protein_key)
        X_rna = get_layer(rna, rna_layer, rna_key)
        X_prot = get_layer(prot, protein_layer, protein_key)
        check_finite(X_rna, f"mdata[{rna_key!r}]", rna_layer)
        check_finite(X_prot, f"mdata[{protein_key!r}]", protein_layer)
        if looks_like_counts(X_rna):
            warnings.warn(
                f"mdata[{rna_key!r}] {'layer ' + repr(rna_layer) if rna_layer else '.X'} looks like raw counts; "
                "CrossmodalNet expects log-normalised RNA (run `cmn.pp.log_normalize(mdata)` first).",
                UserWarning,
                stacklevel=2,
            )
        if looks_like_counts(X_prot):
            warnings.warn(
                f"mdata[{protein_key!r}] {'layer ' + repr(protein_layer) if protein_layer else '.X'} looks like raw "
                "ADT counts; CrossmodalNet expects normalised proteins (run `cmn.pp.clr(mdata)` or `cmn.pp.dsb`).",
                UserWarning,
                stacklevel=2,
            )
        constant = zero_variance_columns(X_prot)
        if constant.any():
            warnings.warn(
                f"{int(constant.sum())} protein(s) are constant across cells ({prot.var_names[constant][:5].tolist()}); "
                "their Pearson correlation is undefined and they are left out of the per-protein means.",
                UserWarning,
                stacklevel=2,
            )
        for key, what in ((time_key, "time_key"), (batch_key, "batch_key")):
            if key is None:
                continue
            if key not in mdata.obs:
                raise KeyError(
                    f"`{what}={key!r}` is not a column of `mdata.obs`; columns are {list(mdata.obs.columns)}. "
                    "Add it to `mdata.obs` (or run `mdata.update()` after adding it to a modality)."
                )
            n_missing = int(mdata.obs[key].isna().sum())
            if n_missing:
                raise ValueError(
                    f"`mdata.obs[{key!r}]` has {n_missing} missing value(s) of {mdata.n_obs}; fill or drop those cells first."
                )
        if time_key is not None and mdata.obs[time_key].nunique() < 2:
            logger.warning(
                "`mdata.obs[%r]` has a single time point: CrossmodalNet trains without a time discriminator.", time_key
            )

        mudata_fields = [
            fields.MuDataLayerField(
                REGISTRY_KEYS.X_KEY, rna_layer, mod_key=rna_key, is_count_data=False, mod_required=True
            ),
            fields.MuDataLayerField(
                REGISTRY_KEYS.PROTEIN_KEY, protein_layer, mod_key=protein_key, is_count_data=False, mod_required=True
            ),
            fields.MuDataCategoricalObsField(REGISTRY_KEYS.TIME_KEY, time_key, mod_key=None),
            fields.MuDataCategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key, mod_key=None),
        ]
        adata_manager = AnnDataManager(fields=mudata_fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(mdata, **kwargs)
        cls.register_manager(adata_manager)

    @classmethod
    def setup_anndata(cls, *args, **kwargs) -> None:
        """Not supported: CrossmodalNet needs RNA and protein modalities; use :meth:`~crossmodalnet.model.CrossmodalNet.setup_mudata`."""
        raise TypeError(
            "CrossmodalNet trains on a MuData with RNA and protein modalities: use `CrossmodalNet.setup_mudata`."
        )

    # --- names and registry state --------------------------------------------------------------
    def _setup_arg(self, name: str):
        return self.registry_["setup_args"][name]

    def _field_state(self, key: str) -> dict:
        return self.registry_["field_registries"][key]["state_registry"]

    @property
    def gene_names(self) -> pd.Index:
        """Genes the model takes as input, in order."""
        return pd.Index(np.asarray(self._field_state(REGISTRY_KEYS.X_KEY)["column_names"]).astype(str))

    @property
    def protein_names(self) -> pd.Index:
        """Proteins the model predicts, in order."""
        return pd.Index(np.asarray(self._field_state(REGISTRY_KEYS.PROTEIN_KEY)["column_names"]).astype(str))

    @property
    def n_genes(self) -> int:
        """Number of input genes."""
        return len(self.gene_names)

    @property
    def n_proteins(self) -> int:
        """Number of predicted proteins."""
        return len(self.protein_names)

    @property
    def time_categories(self) -> np.ndarray:
        """Registered time points in model order (numeric order for numeric times)."""
        return np.asarray(self._field_state(REGISTRY_KEYS.TIME_KEY)["categorical_mapping"])

    @property
    def batch_categories(self) -> np.ndarray:
        """Registered batch categories."""
        return np.asarray(self._field_state(REGISTRY_KEYS.BATCH_KEY)["categorical_mapping"])

    @property
    def time_values(self) -> np.ndarray | None:
        """Numeric value of each time category, or ``None`` if the time points are not numeric."""
        values = pd.to_numeric(pd.Series(self.time_categories), errors="coerce").to_numpy(dtype=float)
        return None if np.isnan(values).any() else values

    # --- training --------------------------------------------------------------------------------
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

    def train(
        self,
        max_epochs: int = 500,
        *,
        split: Literal["random", "holdout_time"] = "random",
        holdout_time: object = None,
        train_size: float = 0.8,
        validation_size: float = 0.05,
        split_seed: int | None = None,
        batch_size: int = 256,
        sparse_batches: bool = False,
        early_stopping: bool = True,
        early_stopping_patience: int = 10,
        early_stopping_monitor: Literal["pearson_cell_validation", "pearson_protein_validation"] = (
            "pearson_protein_validation"
        ),
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        lr: float = 1e-3,
        weight_decay: float = 5e-6,
        lr_discriminator: float = 0.0087,
        weight_decay_discriminator: float = 5e-5,
        learning_step: int = 3,
        gradient_penalty: float = 0.4,
        lr_gradnorm: float = 0.01475,
        gradnorm_alpha: float = 0.5,
        input_group_lasso: float = 0.0,
        **trainer_kwargs,
    ) -> None:
        """Train with the Fader/GradNorm objective (paper Algorithm 1, Table S1 defaults).

        Parameters
        ----------
        max_epochs
            Maximum number of passes over the training cells.
        split
            ``"random"``: train/validation/test stratified by time point (the paper's
            in-distribution setting). ``"holdout_time"``: every cell of ``holdout_time`` is the
            test set; its time embedding is never trained and is interpolated at prediction.
        holdout_time
            Time point to hold out with ``split="holdout_time"``.
        train_size, validation_size
            Fractions of cells for training and validation (test gets the rest).
        split_seed
            Seed of the split; defaults to ``scvi.settings.seed`` (0 if that is unset).
        batch_size
            Mini-batch size.
        sparse_batches
            Pass sparse RNA mini-batches to the first layer as sparse CSR tensors instead of
            densifying each mini-batch (the registered matrix is never densified as a whole either
            way). Off by default: on 2 CPU cores the sparse backward pass of the first layer was
            slower than the dense one (see the scale benchmarks page).
        early_stopping
            Stop when ``early_stopping_monitor`` has not improved for ``early_stopping_patience``
            epochs. Whether or not it stops early, the weights of the best validation epoch are
            restored at the end.
        early_stopping_patience
            Epochs without improvement before stopping.
        early_stopping_monitor
            Validation Pearson to monitor: mean per protein (default) or mean per cell (the paper's
            Kaggle metric). Per-cell r is inflated by differences between protein means and levels
            off early; on ``synthetic_cite`` (2,000 × 2,000 × 50) monitoring per-protein r raised the
            validation per-protein r in each paired run we made (e.g. 0.575 vs 0.562, 0.553 vs 0.506).
        accelerator, devices
            Lightning accelerator and devices (``"gpu"`` uses CUDA).
        lr, weight_decay
            Adam settings of MLP1, MLP2 and the embeddings.
        lr_discriminator, weight_decay_discriminator
            Adam settings of the discriminators.
        learning_step
            Every ``learning_step``-th mini-batch trains the discriminators instead of the network.
        gradient_penalty
            Discriminator gradient penalty.
        lr_gradnorm, gradnorm_alpha
            GradNorm weight learning rate and restoring force.
        input_group_lasso
            Weight ``μ`` of a group-lasso penalty ``μ · Σ_g ‖W[:, g]‖₂`` on MLP1's first layer, added
            to the loss outside GradNorm (:func:`crossmodalnet.train.group_lasso`). It shrinks whole
            genes towards zero, which helps when few genes drive each protein and cells are few
            relative to genes. 0 (default) is the paper's objective. On ``synthetic_cite``
            (2,000 cells × 2,000 genes) ``1e-4`` with ``standardize_protein=True`` and
            ``early_stopping_patience=50`` raised test per-protein Pearson from 0.56 to 0.72 (mean of
            three data seeds; Ridge 0.70; docs page *Small data sets*). Its strength interacts with
            ``lr`` (Adam) and ``n_latent``; tune it on validation cells.
            With ``input_reduction``, the groups are the reduced features.
        **trainer_kwargs
            Passed to :class:`scvi.train.Trainer` (a Lightning trainer).
        """
        check_input_group_lasso(input_group_lasso)  # before anything changes on the model
        if early_stopping_monitor not in _MONITORS:
            raise ValueError(f"`early_stopping_monitor` must be one of {_MONITORS}, got {early_stopping_monitor!r}.")
        if self.adata_manager is None:
            raise ValueError(
                "This model was loaded without data. Load it with the training MuData "
                "(`CrossmodalNet.load(dir_path, mdata)`) to continue training."
            )
        seed = split_seed if split_seed is not None else (settings.seed if settings.seed is not None else 0)
        train_idx, val_idx, test_idx = self._make_split(split, holdout_time, train_size, validation_size, seed)
        self.split_ = {
            "kind": split,
            "seed": int(seed),
            "train_size": float(train_size),
            "validation_size": float(validation_size),
            "n_train": int(train_idx.size),
            "n_validation": int(val_idx.size),
            "n_test": int(test_idx.size),
        }
        if split == "holdout_time":
            self.split_["holdout_time"] = str(holdout_time)
        codes = self.adata_manager.get_from_registry(REGISTRY_KEYS.TIME_KEY).reshape(-1)
        self.trained_time_codes_ = np.unique(codes[train_idx]).astype(np.int64)

        if self.module.standardize_input and not bool(self.module.input_scaling_fitted):
            mean, std = self._column_moments(REGISTRY_KEYS.X_KEY, train_idx)
            self.module.fit_input_scaling(mean, std)
        if self.module.standardize_protein and not bool(self.module.protein_scaling_fitted):
            mean, std = self._column_moments(REGISTRY_KEYS.PROTEIN_KEY, train_idx)
            self.module.fit_protein_scaling(mean, std)
        if self.module.input_reduction is not None and not bool(self.module.input_reduction_fitted):
            self._fit_input_reduction(train_idx, seed=seed)
        data_splitter = self._data_splitter_cls(
            self.adata_manager,
            external_indexing=[train_idx, val_idx, test_idx],
            batch_size=batch_size,
            load_sparse_tensor=sparse_batches,
            distributed_sampler=_is_data_parallel(trainer_kwargs.get("strategy")),
        )
        plan = self._training_plan_cls(
            self.module,
            lr=lr,
            weight_decay=weight_decay,
            lr_discriminator=lr_discriminator,
            weight_decay_discriminator=weight_decay_discriminator,
            learning_step=learning_step,
            gradient_penalty=gradient_penalty,
            lr_gradnorm=lr_gradnorm,
            gradnorm_alpha=gradnorm_alpha,
            input_group_lasso=input_group_lasso,
        )
        callbacks = list(trainer_kwargs.pop("callbacks", []))
        has_validation = val_idx.size > 0
        restore = RestoreBestWeights(monitor=early_stopping_monitor, mode="max")
        if has_validation:
            callbacks.append(restore)
        else:
            # Lightning refuses an empty validation loader: switch the validation loop off.
            trainer_kwargs["limit_val_batches"] = 0
            if early_stopping:
                warnings.warn(
                    "No validation cells: early stopping and best-epoch restoration are off.",
                    UserWarning,
                    stacklevel=2,
                )
        runner = self._train_runner_cls(
            self,
            training_plan=plan,
            data_splitter=data_splitter,
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=devices,
            early_stopping=early_stopping and has_validation,
            early_stopping_monitor=early_stopping_monitor,
            early_stopping_patience=early_stopping_patience,
            early_stopping_mode="max",
            callbacks=callbacks,
            **{"check_val_every_n_epoch": 1, **trainer_kwargs},
        )
        runner()
        # scvi-tools' logger keeps object columns; numeric ones are what users plot and compare.
        self.history_ = {k: v.astype(float) for k, v in (self.history_ or {}).items()}
        if restore.best_epoch is not None:
            self.split_["best_epoch"] = int(restore.best_epoch)
            self.split_["best_" + early_stopping_monitor] = float(restore.best_score)
        self.module.eval()

    def _column_moments(
        self, registry_key: str, train_idx: np.ndarray, chunk: int = 4096
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-column mean and standard deviation of a registered matrix over the training cells, by row chunks."""
        X = self.adata_manager.get_from_registry(registry_key)
        total = np.zeros(X.shape[1])
        total_sq = np.zeros(X.shape[1])
        rows = np.sort(train_idx)
        for start in range(0, rows.size, chunk):
            block = X[rows[start : start + chunk]]
            if sparse.issparse(block):
                total += np.asarray(block.sum(axis=0)).ravel()
                total_sq += np.asarray(block.multiply(block).sum(axis=0)).ravel()
            else:
                block = np.asarray(block, dtype=np.float64)
                total += block.sum(axis=0)
                total_sq += (block**2).sum(axis=0)
        mean = total / rows.size
        std = np.sqrt(np.maximum(total_sq / rows.size - mean**2, 0.0))
        return torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)

    def _fit_input_reduction(self, train_idx: np.ndarray, *, seed: int) -> None:
        """Fit the HVG selection or the truncated SVD of the module's input on the training cells."""
        X = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        block = X[np.sort(train_idx)]
        block = block.tocsr() if sparse.issparse(block) else np.asarray(block, dtype=np.float32)
        k = self.module.n_features
        if self.module.input_reduction == "hvg":
            import scanpy as sc
            from anndata import AnnData

            # scanpy's seurat flavour expects log-normalised data, which is what the model is given.
            tmp = AnnData(block)
            tmp.var_names = self.gene_names.astype(str)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                sc.pp.highly_variable_genes(tmp, n_top_genes=k, flavor="seurat", inplace=True)
            disp = np.nan_to_num(tmp.var["dispersions_norm"].to_numpy(dtype=float), nan=-np.inf)
            hvg = tmp.var["highly_variable"].to_numpy(dtype=bool)
            # scanpy's selection; ties at its cut-off can give more or fewer than k genes: keep exactly k,
            # scanpy's genes first, then by normalised dispersion, then by position
            order = np.lexsort((np.arange(disp.size), -disp, ~hvg))
            self.module.fit_input_reduction(torch.as_tensor(np.sort(order[:k])))
        else:
            from sklearn.decomposition import TruncatedSVD

            if k >= min(block.shape):
                raise ValueError(
                    f"`n_input_features={k}` SVD components need more than {k} training cells and genes; "
                    f"there are {block.shape[0]} training cells. Use fewer components."
                )
            svd = TruncatedSVD(n_components=k, random_state=seed).fit(block)
            self.module.fit_input_reduction(torch.as_tensor(svd.components_.T.copy(), dtype=torch.float32))

    # --- time handling ---------------------------------------------------------------------------
    def _time_code(self, value: object) -> int:
        """Code of a registered time category (exact match, numeric-aware)."""
        cats = self.time_categories
        hit = np.flatnonzero(cats.astype(str) == str(value))
        if hit.size == 0 and self.time_values is not None:
            try:
                hit = np.flatnonzero(np.isclose(self.time_values, float(value)))
            except (TypeError, ValueError):
                hit = np.array([], dtype=int)
        if hit.size == 0:
            raise ValueError(f"Time point {value!r} is not one of the registered time points {cats.tolist()}.")
        return int(hit[0])

    def _trained_codes(self) -> np.ndarray:
        if self.trained_time_codes_ is None:
            return np.arange(len(self.time_categories))
        return np.asarray(self.trained_time_codes_, dtype=np.int64)

    def _time_weights(self, value: object, *, allow_extrapolation: bool = False) -> np.ndarray:
        """Weights over the time categories that make up the time point ``value``.

        A trained time point is one-hot; an unseen numeric value between two trained points gets
        the linear-interpolation weights of its two neighbours (extrapolation only if allowed).
        """
        weights = np.zeros(len(self.time_categories))
        trained = self._trained_codes()
        try:
            code = self._time_code(value)
        except ValueError:
            code = None
        if code is not None and code in trained:
            weights[code] = 1.0
            return weights
        values = self.time_values
        if values is None:
            raise ValueError(
                f"Time point {value!r} was not seen in training and the registered time points "
                f"{self.time_categories.tolist()} are not numeric, so it cannot be interpolated."
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

    def _time_embedding_of(self, value: object, *, allow_extrapolation: bool = False) -> torch.Tensor:
        """Embedding of one time value: learned, or interpolated between the two nearest trained points."""
        table = self.module.covariate_embeddings[0].weight.detach()
        w = torch.as_tensor(self._time_weights(value, allow_extrapolation=allow_extrapolation), dtype=table.dtype)
        return w.to(table.device) @ table

    def interpolate_time_embedding(self, values: Sequence[float], *, allow_extrapolation: bool = False) -> pd.DataFrame:
        """Return the time embedding at arbitrary numeric time points.

        Trained time points give their learned embedding; values between two trained points give the
        linear interpolation of their embeddings (paper §4.2), as used by :meth:`predict_protein`.

        Parameters
        ----------
        values
            Numeric time points.
        allow_extrapolation
            Allow values outside the trained range (linear extrapolation).

        Returns
        -------
        Values × ``n_latent`` DataFrame indexed by the values.
        """
        rows = [self._time_embedding_of(v, allow_extrapolation=allow_extrapolation).cpu().numpy() for v in values]
        return pd.DataFrame(
            np.vstack(rows) if rows else np.zeros((0, self.module.n_latent), dtype=np.float32),
            index=pd.Index(list(values), name="time"),
            columns=[f"dim_{i}" for i in range(self.module.n_latent)],
        )

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
        rows = [self._time_embedding_of(self.time_categories[c]).cpu().numpy() for c in codes]
        return pd.DataFrame(
            np.vstack(rows),
            index=pd.Index(self.time_categories[codes].astype(str), name="time"),
            columns=[f"dim_{i}" for i in range(self.module.n_latent)],
        )

    # --- inference helpers -----------------------------------------------------------------------
    def _resolve_mdata(self, mdata: MuData | None) -> MuData:
        if mdata is None:
            if self.adata is None:
                raise ValueError("This model was loaded without data: pass `mdata` to predict on.")
            return self.adata
        if not isinstance(mdata, MuData):
            raise TypeError(
                f"Expected a MuData, got {type(mdata).__name__}. Wrap an RNA-only AnnData with "
                "`cmn.pp.to_mudata(adata)`."
            )
        return mdata

    def _rna_rows(self, mdata: MuData) -> tuple[AnnData | object, np.ndarray]:
        """RNA matrix of ``mdata`` with the model's genes, and the row of each ``mdata`` cell (-1 if none)."""
        rna_key, layer = self._setup_arg("rna_key"), self._setup_arg("rna_layer")
        rna = get_modality(mdata, rna_key, "CrossmodalNet.predict_protein", role="RNA")
        genes = pd.Index(rna.var_names.astype(str))
        if not genes.equals(self.gene_names):
            missing = self.gene_names.difference(genes)
            raise ValueError(
                f"The genes of `mdata[{rna_key!r}]` differ from the model's {self.n_genes} genes "
                f"({len(missing)} missing, or in another order). Align them first with "
                "`cmn.pp.harmonize_genes(mdata, model)`."
            )
        X = get_layer(rna, layer, rna_key)
        rows = rna.obs_names.get_indexer(mdata.obs_names)
        return X, rows

    def _iter_batches(
        self, X, rows: np.ndarray, batch_size: int, *, allow_sparse: bool = False
    ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """Yield (positions in ``rows``, float32 tensor) for cells that have RNA.

        The tensor is dense, or sparse CSR when ``allow_sparse`` and the matrix is sparse; only one
        batch of rows is read (and densified) at a time, also from backed matrices.
        """
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        have = np.flatnonzero(rows >= 0)
        device = self.device
        for start in range(0, have.size, batch_size):
            pos = have[start : start + batch_size]
            idx = rows[pos]
            order = np.argsort(idx, kind="stable")  # backed HDF5 matrices need increasing row indices
            sorted_idx = idx[order]
            in_order = bool((order[1:] > order[:-1]).all())
            if sorted_idx[-1] - sorted_idx[0] + 1 == sorted_idx.size:
                # contiguous rows (the usual case): one slice read, ~10x faster than a row list on backed data
                block = X[int(sorted_idx[0]) : int(sorted_idx[-1]) + 1]
            else:
                block = X[sorted_idx]
            if sparse.issparse(block):
                block = sparse.csr_matrix(block)
                if not in_order:
                    block = block[np.argsort(order, kind="stable")]
                if allow_sparse and block.nnz < np.iinfo(np.int32).max:
                    block.sort_indices()
                    with warnings.catch_warnings():
                        warnings.filterwarnings("ignore", message=".*[Ss]parse.*", category=UserWarning)
                        x = torch.sparse_csr_tensor(
                            torch.from_numpy(block.indptr.astype(np.int32, copy=False)),
                            torch.from_numpy(block.indices.astype(np.int32, copy=False)),
                            torch.from_numpy(block.data.astype(np.float32, copy=False)),
                            size=block.shape,
                        )
                    yield pos, x.to(device)
                    continue
                dense = block.toarray().astype(np.float32, copy=False)
            else:
                dense = np.empty(np.shape(block), dtype=np.float32)
                if in_order:
                    dense[...] = np.asarray(block)
                else:
                    dense[order] = np.asarray(block)
            yield pos, torch.from_numpy(dense).to(device)

    def _cell_time_weights(
        self, mdata: MuData, *, time: object = None, allow_extrapolation: bool = False
    ) -> tuple[torch.Tensor, np.ndarray]:
        """Weights over the time categories: distinct rows (k × categories) and each cell's row (cells,).

        Trained time points give one-hot rows. Nothing of size cells × d is built, so memory stays
        bounded by the prediction batch on atlases of millions of cells.
        """
        n = mdata.n_obs
        time_key = self._setup_arg("time_key")
        if time is not None:
            codes, values = np.zeros(n, dtype=np.int64), [time]
        elif time_key is None:
            codes, values = np.zeros(n, dtype=np.int64), [self.time_categories[0]]
        elif time_key in mdata.obs:
            codes, values = _factorize(mdata.obs[time_key])
            if (codes < 0).any():
                raise ValueError(f"`mdata.obs[{time_key!r}]` has missing values; pass `time=` or fill them.")
        else:
            raise KeyError(
                f"`mdata.obs` has no time column {time_key!r}; pass `time=` to predict every cell at one time point."
            )
        table = np.vstack([self._time_weights(v, allow_extrapolation=allow_extrapolation) for v in values])
        return torch.as_tensor(table, dtype=torch.float32), codes

    def _batch_codes(self, mdata: MuData, *, batch: object = None) -> np.ndarray:
        """Code of each cell's batch category (cells,)."""
        n = mdata.n_obs
        batch_key = self._setup_arg("batch_key")
        b_cats = pd.Index(self.batch_categories.astype(str))
        if batch is not None:
            codes, values = np.zeros(n, dtype=np.int64), [batch]
        elif batch_key is None:
            codes, values = np.zeros(n, dtype=np.int64), [b_cats[0]]
        elif batch_key in mdata.obs:
            codes, values = _factorize(mdata.obs[batch_key])
        else:
            raise KeyError(
                f"`mdata.obs` has no batch column {batch_key!r}; pass `batch=` with one of {b_cats.tolist()}."
            )
        lookup = b_cats.get_indexer([str(v) for v in values])
        unknown = sorted({str(v) for v, c in zip(values, lookup, strict=True) if c < 0})
        if unknown or (codes < 0).any():
            unknown = unknown or ["<missing>"]
            raise ValueError(f"Unknown batch categories {unknown[:5]}; pass `batch=` with one of {b_cats.tolist()}.")
        return lookup[codes].astype(np.int64)

    def _covariates(
        self,
        mdata: MuData,
        *,
        time: object = None,
        batch: object = None,
        allow_extrapolation: bool = False,
    ) -> Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor]]:
        """Validate the covariates of ``mdata`` once and return a per-batch lookup.

        The returned function gives, for cell positions, their time weights (cells × categories)
        and batch embedding (cells × d).
        """
        w_rows, w_codes = self._cell_time_weights(mdata, time=time, allow_extrapolation=allow_extrapolation)
        b_codes = torch.from_numpy(self._batch_codes(mdata, batch=batch))
        b_table = self.module.covariate_embeddings[1].weight.detach()
        w_index = torch.from_numpy(w_codes)

        def of(pos: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            # index_select, not tensor[idx]: advanced indexing was ~1-10 ms per batch with 2 CPU threads
            idx = torch.from_numpy(np.asarray(pos, dtype=np.int64))
            w = w_rows.index_select(0, w_index.index_select(0, idx)).to(b_table.device)
            return w, b_table.index_select(0, b_codes.index_select(0, idx).to(b_table.device))

        return of

    def _check_trained(self) -> None:
        if not self.is_trained_:
            raise ValueError("The model is not trained yet: call `model.train()` first.")

    @torch.inference_mode()
    def predict_protein(
        self,
        mdata: MuData | None = None,
        *,
        time: object = None,
        batch: object = None,
        batch_size: int = 1024,
        allow_extrapolation: bool = False,
        interpolation: Literal["embedding", "prediction"] = "embedding",
        return_uncertainty: bool = False,
        level: float = 0.9,
        calibration: Literal["auto", "protein", "pooled"] = "auto",
        missing_genes: Sequence[str] | None = None,
        n_imputations: int = 10,
        rng: int | np.random.Generator | None = 0,
    ) -> pd.DataFrame | ProteinUncertainty:
        """Predict protein abundance of every cell from its RNA, optionally with calibrated uncertainty.

        Parameters
        ----------
        mdata
            MuData whose RNA modality has the model's genes (same names and order); defaults to
            the registered MuData. A protein modality is not needed.
        time
            Predict every cell at this time point instead of its own (counterfactual time). A
            numeric value between two trained time points uses the linear interpolation of their
            embeddings; a held-out time point of the registered data is interpolated the same way.
        batch
            Predict every cell as this batch category instead of its own.
        batch_size
            Cells per forward pass; memory is bounded by it.
        allow_extrapolation
            Allow numeric time points outside the trained range (linear extrapolation).
        interpolation
            How an unseen time point between two trained ones is predicted. ``"embedding"`` (the
            paper's §4.2): decode ``z`` plus the linearly interpolated time embedding.
            ``"prediction"``: decode at both neighbouring time points and interpolate the two
            predictions with the same weights. An interpolated embedding has a smaller norm than
            the trained ones, which the decoder never saw; on ``synthetic_cite`` with the middle
            day held out, interpolating predictions lowered the test MSE (see the benchmarks page).
            Trained time points give identical results either way.
        return_uncertainty
            Also return a spread and a central interval of every predicted value (see
            :class:`~crossmodalnet.model.ProteinUncertainty` and the docs page *Uncertainty*). The
            first call calibrates it on the validation cells
            (:meth:`~crossmodalnet.model.CrossmodalNet.calibrate_uncertainty`).
        level
            With ``return_uncertainty``: nominal coverage of the interval.
        calibration
            With ``return_uncertainty``: split-conformal multiplier per protein (``"protein"``), one
            for all proteins (``"pooled"``), or per protein only with at least 100 calibration
            cells (``"auto"``).
        missing_genes
            With ``return_uncertainty``: model genes the query did not measure (filled with zeros in
            ``mdata``); their imputation spread widens the intervals.
            :func:`crossmodalnet.tl.predict_protein` passes the genes it had to fill.
        n_imputations
            With ``missing_genes``: draws of the missing genes from the training cells' values.
        rng
            With ``return_uncertainty``: seed or :class:`numpy.random.Generator` of the MC-dropout
            masks and imputations.

        Returns
        -------
        Cells × proteins DataFrame on the scale of the registered protein layer; cells without RNA
        get NaN rows. With ``return_uncertainty=True``, a
        :class:`~crossmodalnet.model.ProteinUncertainty` holding that DataFrame as ``mean`` and
        ``std``, ``lower`` and ``upper`` DataFrames of the same shape.
        """
        if return_uncertainty:
            return self._predict_with_uncertainty(
                mdata,
                level=level,
                calibration=calibration,
                missing_genes=missing_genes,
                n_imputations=n_imputations,
                rng=rng,
                time=time,
                batch=batch,
                batch_size=batch_size,
                allow_extrapolation=allow_extrapolation,
                interpolation=interpolation,
            )
        self._check_trained()
        mdata = self._resolve_mdata(mdata)
        if interpolation not in ("embedding", "prediction"):
            raise ValueError(f"`interpolation` must be 'embedding' or 'prediction', got {interpolation!r}.")
        X, rows = self._rna_rows(mdata)
        covariates = self._covariates(mdata, time=time, batch=batch, allow_extrapolation=allow_extrapolation)
        table = self.module.covariate_embeddings[0].weight.detach()
        self.module.eval()
        out = np.full((mdata.n_obs, self.n_proteins), np.nan, dtype=np.float32)
        for pos, x in self._iter_batches(X, rows, batch_size, allow_sparse=self.module.sparse_input):
            z = self.module.inference(x)["z"]
            w, b = covariates(pos)
            if interpolation == "embedding":
                pred = self.module.generative(z, w @ table + b)["protein"]
            else:
                pred = sum(
                    w[:, c : c + 1] * self.module.generative(z, table[c] + b)["protein"]
                    for c in torch.nonzero(w.abs().sum(0)).flatten().tolist()
                )
            out[pos] = pred.cpu().numpy()
        return pd.DataFrame(out, index=mdata.obs_names.copy(), columns=self.protein_names.copy())

    @torch.inference_mode()
    def get_latent_representation(self, mdata: MuData | None = None, *, batch_size: int = 1024) -> np.ndarray:
        """Return the basal latent ``z`` of every cell (free of time information by design).

        Parameters
        ----------
        mdata
            MuData whose RNA modality has the model's genes; defaults to the registered MuData.
        batch_size
            Cells per forward pass.

        Returns
        -------
        Array of shape (cells, ``n_latent``); cells without RNA get NaN rows.
        """
        self._check_trained()
        mdata = self._resolve_mdata(mdata)
        X, rows = self._rna_rows(mdata)
        self.module.eval()
        out = np.full((mdata.n_obs, self.module.n_latent), np.nan, dtype=np.float32)
        for pos, x in self._iter_batches(X, rows, batch_size, allow_sparse=self.module.sparse_input):
            out[pos] = self.module.inference(x)["z"].cpu().numpy()
        return out

    def get_saliency(
        self,
        mdata: MuData | None = None,
        *,
        proteins: str | Sequence[str] | None = None,
        method: Literal["gradient", "integrated_gradients"] = "gradient",
        aggregate: Literal["sum", "mean", "abs_sum", "abs_mean"] = "sum",
        indices: Sequence[int] | np.ndarray | None = None,
        time: object = None,
        n_steps: int = 50,
        batch_size: int = 256,
    ) -> pd.DataFrame:
        r"""Rank genes for each protein by saliency :cite:p:`Simonyan2013,Yang2023`.

        ``method="gradient"`` computes the paper's :math:`\gamma_j = \sum_i \partial \hat y_i(j) / \partial x_i`
        over the chosen cells. ``method="integrated_gradients"`` replaces each gradient by the
        integrated gradient from an all-zero expression baseline, :math:`(x_i - 0) \cdot
        \frac{1}{K}\sum_k \nabla \hat y_i(j)(\tfrac{k}{K} x_i)`, which attributes the prediction
        to genes the cell actually expresses. Gradients are taken with respect to the registered RNA
        input (e.g. log-normalised expression), with the network in evaluation mode, batched: one
        backward pass per batch computes all requested proteins at once.

        Parameters
        ----------
        mdata
            MuData whose RNA modality has the model's genes; defaults to the registered MuData.
        proteins
            Proteins to compute; all by default.
        method
            ``"gradient"`` (the paper's saliency) or ``"integrated_gradients"``.
        aggregate
            How per-cell attributions are combined: ``"sum"`` (the paper's :math:`\gamma_j`, signed),
            ``"mean"`` (sum divided by the number of cells, comparable across cell subsets),
            ``"abs_sum"`` / ``"abs_mean"`` (magnitudes, so opposite effects in different cells do not cancel).
        indices
            Positions of the cells to use (e.g. one time point or cell type); all cells by default.
        time
            Evaluate every cell at this time point instead of its own.
        n_steps
            Riemann steps of integrated gradients.
        batch_size
            Cells per backward pass; memory grows with ``batch_size × n_genes × n_proteins``.

        Returns
        -------
        Genes × proteins DataFrame of saliency scores; rank genes by it (larger = stronger positive
        driver for signed aggregates).
        """
        self._check_trained()
        if method not in ("gradient", "integrated_gradients"):
            raise ValueError(f"`method` must be 'gradient' or 'integrated_gradients', got {method!r}.")
        if aggregate not in ("sum", "mean", "abs_sum", "abs_mean"):
            raise ValueError(f"`aggregate` must be one of 'sum', 'mean', 'abs_sum', 'abs_mean', got {aggregate!r}.")
        if n_steps < 1:
            raise ValueError(f"`n_steps` must be at least 1, got {n_steps}.")
        mdata = self._resolve_mdata(mdata)
        names = (
            [proteins]
            if isinstance(proteins, str)
            else (list(self.protein_names) if proteins is None else list(proteins))
        )
        unknown = [p for p in names if p not in self.protein_names]
        if unknown:
            raise KeyError(f"Unknown protein(s) {unknown[:5]}; the model predicts {list(self.protein_names)[:10]}...")
        cols = torch.as_tensor(self.protein_names.get_indexer(names), dtype=torch.long)
        X, rows = self._rna_rows(mdata)
        covariates = self._covariates(mdata, time=time)
        table = self.module.covariate_embeddings[0].weight.detach()
        if indices is not None:
            keep = np.zeros(mdata.n_obs, dtype=bool)
            keep[np.asarray(indices)] = True
            rows = np.where(keep, rows, -1)
        self.module.eval()
        n_cells = 0
        total = torch.zeros(len(names), self.n_genes, dtype=torch.float64)
        eye = torch.eye(len(names), device=self.device)
        for pos, x in self._iter_batches(X, rows, batch_size):
            w, b = covariates(pos)
            c = w @ table + b
            n_cells += x.shape[0]
            if method == "gradient":
                steps, scale = [x], None
            else:
                steps, scale = [x * ((k + 0.5) / n_steps) for k in range(n_steps)], x
            acc = torch.zeros(len(names), *x.shape, device=x.device)
            for xs in steps:
                xs = xs.detach().requires_grad_(requires_grad=True)
                with torch.enable_grad():
                    out = self.module.generative(self.module.inference(xs)["z"], c)["protein"][:, cols.to(x.device)]
                    # one batched backward: grad_outputs[j] selects protein j for every cell
                    (g,) = torch.autograd.grad(
                        out, xs, grad_outputs=eye[:, None, :].expand(-1, x.shape[0], -1), is_grads_batched=True
                    )
                acc += g
            per_cell = acc if scale is None else acc / n_steps * scale
            per_cell = per_cell.abs() if aggregate.startswith("abs") else per_cell
            total += per_cell.sum(dim=1).double().cpu()
        if n_cells == 0:
            raise ValueError("No cell with RNA was selected; check `indices`.")
        if aggregate.endswith("mean"):
            total /= n_cells
        return pd.DataFrame(total.T.numpy(), index=self.gene_names.copy(), columns=pd.Index(names, name="protein"))

    # --- persistence -----------------------------------------------------------------------------
    def save(
        self,
        dir_path: str | os.PathLike,
        *,
        overwrite: bool = False,
        save_anndata: bool = False,
        prefix: str | None = None,
    ) -> None:
        """Save the model atomically: everything is written to a temporary folder, then renamed.

        A crash or full disk part-way leaves ``dir_path`` either absent or as it was, never half
        written. The folder holds scvi-tools' ``model.pt`` (weights, registry, split, GradNorm and
        input-scaling state, discriminators) and ``crossmodalnet.json`` (format version, package
        version, SHA-256 checksum of each file), which :meth:`~crossmodalnet.model.CrossmodalNet.load`
        verifies.

        Parameters
        ----------
        dir_path
            Folder to create.
        overwrite
            Replace an existing folder; otherwise an existing ``dir_path`` raises.
        save_anndata
            Also write the registered MuData into the folder.
        prefix
            File-name prefix.
        """
        target = Path(dir_path)
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target} already exists; pass `overwrite=True` to replace it.")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            super().save(str(tmp), prefix=prefix, overwrite=True, save_anndata=save_anndata)
            files = sorted(f.name for f in tmp.iterdir())
            manifest = {
                "format": _FORMAT_NAME,
                "format_version": _FORMAT_VERSION,
                "crossmodalnet_version": _package_version(),
                "prefix": prefix or "",
                "sha256": {name: _sha256(tmp / name) for name in files},
            }
            (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=2))
            if target.exists():
                backup = target.with_name(f".{target.name}.old-{os.getpid()}")
                target.rename(backup)
                tmp.rename(target)
                shutil.rmtree(backup, ignore_errors=True)
            else:
                tmp.rename(target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    @classmethod
    def load(
        cls,
        dir_path: str,
        mdata: MuData | None = None,
        *,
        accelerator: str = "cpu",
        device: int | str = "auto",
        prefix: str | None = None,
    ) -> CrossmodalNet:
        """Load a model saved with :meth:`~crossmodalnet.model.CrossmodalNet.save`.

        Parameters
        ----------
        dir_path
            Directory written by :meth:`save`.
        mdata
            MuData laid out like the training data (same modalities, layers, genes and covariate
            columns), for continued training or default predictions. ``None`` loads the model
            without data: pass a MuData to each getter.
        accelerator, device
            Where to put the model.
        prefix
            File-name prefix used at save time.

        Returns
        -------
        The model, in evaluation mode.
        """
        _verify_model_dir(Path(dir_path), prefix)
        return super().load(
            str(dir_path),
            adata=mdata if mdata is not None else False,
            accelerator=accelerator,
            device=device,
            prefix=prefix,
        )

    def __repr__(self) -> str:
        state = "trained" if self.is_trained_ else "untrained"
        return f"{self._model_summary_string} ({state})"
