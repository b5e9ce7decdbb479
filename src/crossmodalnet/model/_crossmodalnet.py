"""The CrossmodalNet model class: MuData registry, training, getters, save/load."""

from __future__ import annotations

import contextlib
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
from scvi.train._callbacks import LoudEarlyStopping

from crossmodalnet._constants import DEFAULT_PROTEIN_KEY, DEFAULT_RNA_KEY, REGISTRY_KEYS
from crossmodalnet._settings import quiet_third_party
from crossmodalnet._utils import (
    NormalizedRows,
    check_aligned_cells,
    check_finite,
    check_unique_names,
    detect_control_features,
    get_layer,
    get_modality,
    looks_like_counts,
    missing_obs_column_message,
    query_normalization,
    resolve_obs_column,
    rna_normalization_record,
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

_PAPER: dict[str, object] = {
    "n_latent": 512,
    "dropout_rate": 0.05,
    "use_batch_norm": True,
    "n_hidden_discriminator": 128,
    "lambda_dis": 0.5,
    "standardize_input": False,
    "input_reduction": None,
    "n_input_features": None,
    "standardize_protein": False,
    "linear_path": False,
}
PRESETS: dict[str, dict[str, object]] = {
    "paper": _PAPER,
    "default": {**_PAPER, "standardize_protein": True, "linear_path": True},
}
"""Model settings of each preset: ``"paper"`` is Table S1 of :cite:t:`Yang2023`; ``"default"`` adds the linear path."""

TRAIN_PRESETS: dict[str, dict[str, object]] = {
    "paper": {"max_epochs": 500, "early_stopping_patience": 10},
    "default": {"max_epochs": 500, "early_stopping_patience": 10},
}
"""Training settings that differ between presets (used where :meth:`CrossmodalNet.train` gets ``None``)."""

LINEAR_ALPHA_GRID = tuple(float(a) for a in np.logspace(-4, 3, 29))
"""Ridge penalties of the linear path, relative to the mean squared singular value of the training RNA."""
_MANIFEST = "crossmodalnet.json"
_FORMAT_NAME = "crossmodalnet-model"
_FORMAT_VERSION = 1
_SALIENCY_METHODS = ("gradient", "gradient_x_sd", "gradient_x_input", "integrated_gradients", "smoothgrad")
_BASELINE_METHODS = ("gradient_x_input", "integrated_gradients")


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


class _DropMessages(logging.Filter):
    """Drop log records whose message contains one of ``fragments``."""

    def __init__(self, *fragments: str):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(f in record.getMessage() for f in self.fragments)


@contextlib.contextmanager
def _without_messages(logger_name: str, *fragments: str) -> Iterator[None]:
    """Silence specific messages of one third-party logger for the duration of a call the package makes."""
    target = logging.getLogger(logger_name)
    drop = _DropMessages(*fragments)
    target.addFilter(drop)
    try:
        yield
    finally:
        target.removeFilter(drop)


class _EarlyStopping(LoudEarlyStopping):
    """scvi-tools' early stopping, with its reason logged (debug) instead of printed; ``train`` logs a summary."""

    def teardown(self, _trainer, _pl_module, stage: str | None = None) -> None:
        """Log the reason for stopping."""
        if self.early_stopping_reason is not None:
            logger.debug("%s", self.early_stopping_reason.strip())


def _gene_id_columns(var: pd.DataFrame) -> dict[str, np.ndarray]:
    """Text columns of the RNA ``var`` with one distinct value per gene (gene IDs), saved with the model."""
    out = {}
    for col in var.columns:
        values = var[col]
        if (
            pd.api.types.is_object_dtype(values) or isinstance(values.dtype, pd.CategoricalDtype | pd.StringDtype)
        ) and (values.notna().all() and values.is_unique):
            out[str(col)] = values.astype(str).to_numpy()
    return out


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

    The default preset adds a linear path ("wide and deep"): a ridge regression from genes to
    proteins with one intercept per time point, fitted in closed form on the training cells with
    its penalty chosen on the validation cells. The networks learn the residual over it, starting
    from exactly the ridge solution, and the best-epoch restoration can keep that starting point, so
    the validation score never ends below the ridge solution's. ``preset="paper"`` is the paper's
    model with its Table S1 settings.

    Parameters
    ----------
    mdata
        MuData registered with :meth:`~crossmodalnet.model.CrossmodalNet.setup_mudata`.
    preset
        ``"default"``: the paper's architecture plus the linear path and standardised proteins.
        ``"paper"``: exactly Table S1 of :cite:t:`Yang2023` (no linear path, registered protein scale).
        Every other argument left as ``None`` takes the preset's value; an explicit value overrides
        it. The preset also sets :meth:`train`'s ``max_epochs`` and ``early_stopping_patience`` when
        those are ``None``. Measured effects of the default preset are on the docs page *Benchmarks*.
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
        by the paper preset (the paper trains on the registered scale); on by the default preset.
    linear_path
        Add the linear ridge path beside the networks (default preset: on; paper preset: off). Its
        weights are fitted at the first :meth:`train` call on the training cells and saved with the
        model. A held-out time point gets its intercepts interpolated with the same weights as its
        time embedding.
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
    :func:`crossmodalnet.pp.log_normalize` and :func:`crossmodalnet.pp.clr`. Query RNA with raw
    counts is normalised as the training RNA was (:attr:`rna_normalization`), or refused.
    """

    _module_cls = CrossmodalModule
    _training_plan_cls = FaderGradNormPlan
    _data_splitter_cls = DataSplitter
    _train_runner_cls = TrainRunner

    def __init__(
        self,
        mdata: MuData | None = None,
        *,
        preset: Literal["default", "paper"] = "default",
        n_latent: int | None = None,
        dropout_rate: float | None = None,
        use_batch_norm: bool | None = None,
        n_hidden_discriminator: int | None = None,
        lambda_dis: float | None = None,
        standardize_input: bool | None = None,
        input_reduction: Literal["hvg", "svd"] | None = None,
        n_input_features: int | None = None,
        standardize_protein: bool | None = None,
        linear_path: bool | None = None,
        registry: dict | None = None,
    ):
        if preset not in PRESETS:
            raise ValueError(f"`preset` must be one of {list(PRESETS)}, got {preset!r}.")
        super().__init__(mdata, registry=registry)
        given = {
            "n_latent": n_latent,
            "dropout_rate": dropout_rate,
            "use_batch_norm": use_batch_norm,
            "n_hidden_discriminator": n_hidden_discriminator,
            "lambda_dis": lambda_dis,
            "standardize_input": standardize_input,
            "standardize_protein": standardize_protein,
            "linear_path": linear_path,
        }
        resolved = {k: (PRESETS[preset][k] if v is None else v) for k, v in given.items()}
        n_latent, dropout_rate, use_batch_norm = (
            resolved["n_latent"],
            resolved["dropout_rate"],
            resolved["use_batch_norm"],
        )
        n_hidden_discriminator, lambda_dis = resolved["n_hidden_discriminator"], resolved["lambda_dis"]
        standardize_input, standardize_protein = resolved["standardize_input"], resolved["standardize_protein"]
        linear_path = resolved["linear_path"]
        self.preset = preset
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
            linear_path=linear_path,
        )
        self.split_: dict = {}
        self.trained_time_codes_: np.ndarray | None = None
        self.training_cells_: np.ndarray | None = None
        self.rna_normalization_: dict | None = None
        if mdata is not None:
            rna = mdata.mod[self._setup_arg("rna_key")]
            X = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
            self.rna_normalization_ = rna_normalization_record(X, rna.uns)
        self.gene_ids_: dict[str, np.ndarray] = (
            {} if mdata is None else _gene_id_columns(mdata.mod[self._setup_arg("rna_key")].var)
        )
        self._model_summary_string = (
            f"CrossmodalNet: {self.n_genes} genes → {self.n_proteins} proteins, n_latent={n_latent}, "
            f"{n_time} time point(s), {n_batch} batch(es)"
            + ("" if input_reduction is None else f", input {input_reduction} → {n_input_features} features")
            + (", standardised proteins" if standardize_protein else "")
            + (", linear path" if linear_path else "")
            + f" (preset {preset!r})"
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
        isotypes, hashtags = detect_control_features(prot.var)
        if isotypes or hashtags:
            found = ([f"isotype controls {isotypes[:5]}"] if isotypes else []) + (
                [f"hashtags (HTO) {hashtags[:5]}"] if hashtags else []
            )
            warnings.warn(
                f"mdata[{protein_key!r}] holds {' and '.join(found)}: they would become prediction targets (a "
                "hashtag is predicted through the batch covariate, not from RNA) and lower the mean per-protein "
                "Pearson. Remove them before setup: `cmn.pp.dsb` sets isotypes aside, or "
                f"`mdata.mod[{protein_key!r}] = mdata[{protein_key!r}][:, ~mdata[{protein_key!r}].var_names.isin(names)].copy()`; "
                "demultiplex hashtags into an `obs` column first (e.g. for `batch_key`).",
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
        columns = {}
        for key, what in ((time_key, "time_key"), (batch_key, "batch_key")):
            if key is None:
                continue
            column = resolve_obs_column(mdata, key)
            if column is None:
                raise KeyError(missing_obs_column_message(mdata, key, what))
            if column != key:
                logger.info("CrossmodalNet.setup_mudata: `%s=%r` is read from `mdata.obs[%r]`", what, key, column)
            columns[what] = key = column
            n_missing = int(mdata.obs[key].isna().sum())
            if n_missing:
                raise ValueError(
                    f"`mdata.obs[{key!r}]` has {n_missing} missing value(s) of {mdata.n_obs}; fill or drop those cells first."
                )
        if time_key is not None and mdata.obs[columns["time_key"]].nunique() < 2:
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
            fields.MuDataCategoricalObsField(REGISTRY_KEYS.TIME_KEY, columns.get("time_key"), mod_key=None),
            fields.MuDataCategoricalObsField(REGISTRY_KEYS.BATCH_KEY, columns.get("batch_key"), mod_key=None),
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
        max_epochs: int | None = None,
        *,
        split: Literal["random", "holdout_time"] = "random",
        holdout_time: object = None,
        train_size: float = 0.8,
        validation_size: float = 0.05,
        split_seed: int | None = None,
        batch_size: int = 256,
        sparse_batches: bool = False,
        early_stopping: bool = True,
        early_stopping_patience: int | None = None,
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
        """Train with the Fader/GradNorm objective (paper Algorithm 1; Table S1 settings as defaults).

        With a linear path (the default preset), its ridge solution is fitted first on the
        training cells in closed form, then the networks learn the residual.
        The state before the first epoch counts as a candidate of the best-epoch restoration, so the
        validation score of the trained model is never below that of the ridge solution alone.

        Parameters
        ----------
        max_epochs
            Maximum number of passes over the training cells; ``None`` takes the preset's value
            (500 for both presets).
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
            restored at the end. With a linear path, the state before the first epoch is a candidate
            too (``model.split_["best_epoch"]`` is then -1).
        early_stopping_patience
            Epochs without improvement before stopping; ``None`` takes the preset's value (10 for both).
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

        Notes
        -----
        A second call continues training from the current weights, with the modules in training
        mode, on the split of the first call (split arguments that differ are ignored with a warning),
        with GradNorm's weights and reference losses kept and fresh optimisers and early stopping. The
        current weights compete with every new epoch and are kept if none beats their validation
        Pearson (``split_["best_epoch"] == -1``).
        """
        check_input_group_lasso(input_group_lasso)  # before anything changes on the model
        train_defaults = TRAIN_PRESETS[getattr(self, "preset", "paper")]
        max_epochs = train_defaults["max_epochs"] if max_epochs is None else max_epochs
        if early_stopping_patience is None:
            early_stopping_patience = train_defaults["early_stopping_patience"]
        if early_stopping_monitor not in _MONITORS:
            raise ValueError(f"`early_stopping_monitor` must be one of {_MONITORS}, got {early_stopping_monitor!r}.")
        if self.adata_manager is None:
            raise ValueError(
                "This model was loaded without data. Load it with the training MuData "
                "(`CrossmodalNet.load(dir_path, mdata)`) to continue training."
            )
        seed = split_seed if split_seed is not None else (settings.seed if settings.seed is not None else 0)
        previous = self._previous_split()
        if previous is not None:
            # Continued training: a new split would train on the model's earlier test cells.
            train_idx, val_idx, test_idx = previous
            requested = {"kind": split, "seed": int(seed), "train_size": float(train_size)}
            requested["validation_size"] = float(validation_size)
            if any(self.split_.get(k) != v for k, v in requested.items()):
                logger.warning(
                    "Continued training keeps the model's split %s; the split arguments of this call are ignored "
                    "(a new split would train on earlier test cells). Train a new model for another split.",
                    {k: self.split_.get(k) for k in requested},
                )
            logger.info(
                "Continuing training from the current weights on the same split (%d train, %d validation cells)",
                train_idx.size,
                val_idx.size,
            )
        else:
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
        # names of the cells the weights were fitted or selected on, so metrics can leave them out later
        self.training_cells_ = np.asarray(self.adata.obs_names[np.sort(np.r_[train_idx, val_idx])], dtype=str)
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
        self._fit_gene_moments(train_idx)
        if self.module.linear_path and not bool(self.module.linear_path_fitted):
            self._fit_linear_path(train_idx, val_idx)
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
        if has_validation and (previous is not None or self.module.linear_path):
            # The current weights compete with every new epoch: continued training never ends below them,
            # and a first training with a linear path never ends below its ridge-only start.
            restore.set_initial(self._validation_score(val_idx, early_stopping_monitor), self.module.state_dict())
        if has_validation:
            callbacks.append(restore)
            if early_stopping:
                # scvi-tools' own callback, which prints its reason: the summary line below says it instead
                callbacks.append(
                    _EarlyStopping(
                        monitor=early_stopping_monitor,
                        min_delta=0.0,
                        patience=early_stopping_patience,
                        mode="max",
                        warmup_epochs=0,
                    )
                )
        else:
            # Lightning refuses an empty validation loader: switch the validation loop off.
            trainer_kwargs["limit_val_batches"] = 0
            if early_stopping:
                warnings.warn(
                    "No validation cells: early stopping and best-epoch restoration are off.",
                    UserWarning,
                    stacklevel=2,
                )
        n_batches = int(np.ceil(train_idx.size / batch_size))
        # no Lightning warning that an epoch has fewer batches than its logging interval
        trainer_kwargs.setdefault("log_every_n_steps", max(1, min(50, n_batches)))
        with quiet_third_party():  # Lightning's info lines and deprecation notices; not the user's warnings
            runner = self._train_runner_cls(
                self,
                training_plan=plan,
                data_splitter=data_splitter,
                max_epochs=max_epochs,
                accelerator=accelerator,
                devices=devices,
                early_stopping=False,
                callbacks=callbacks,
                **{"check_val_every_n_epoch": 1, **trainer_kwargs},
            )
            # load() and the end of train() leave the module in evaluation mode; Lightning keeps that mode.
            self.module.train()
            runner()
        # scvi-tools' logger keeps object columns; numeric ones are what users plot and compare.
        self.history_ = {k: v.astype(float) for k, v in (self.history_ or {}).items()}
        n_epochs = runner.trainer.current_epoch
        if restore.best_epoch is not None:
            # -1: no epoch of this call beat the weights it started from, which were kept
            self.split_["best_epoch"] = int(restore.best_epoch)
            self.split_["best_" + early_stopping_monitor] = float(restore.best_score)
            logger.info(
                "Trained %d epoch(s)%s; kept the weights of %s (validation %s %.3f)",
                n_epochs,
                " (stopped early)" if n_epochs < max_epochs else "",
                f"epoch {restore.best_epoch + 1}" if restore.best_epoch >= 0 else "the start of this call",
                early_stopping_monitor.replace("_validation", "").replace("_", " "),
                restore.best_score,
            )
        else:
            logger.info("Trained %d epoch(s) (no validation cells)", n_epochs)
        self.module.eval()

    @torch.no_grad()
    def _predict_registered(self, idx: np.ndarray, chunk: int = 1024) -> np.ndarray:
        """Predictions (original scale) of registered cells at their own time point and batch, in eval mode."""
        was_training = self.module.training
        self.module.eval()
        keys = (REGISTRY_KEYS.X_KEY, REGISTRY_KEYS.TIME_KEY, REGISTRY_KEYS.BATCH_KEY)
        arrays = {k: self.adata_manager.get_from_registry(k) for k in keys}
        out = []
        for start in range(0, idx.size, chunk):
            rows = idx[start : start + chunk]
            x = arrays[REGISTRY_KEYS.X_KEY][rows]
            x = x.toarray() if sparse.issparse(x) else np.asarray(x)
            tensors = {REGISTRY_KEYS.X_KEY: torch.as_tensor(x, dtype=torch.float32, device=self.device)}
            for k in keys[1:]:
                tensors[k] = torch.as_tensor(np.asarray(arrays[k])[rows], device=self.device)
            z = self.module.inference(tensors[REGISTRY_KEYS.X_KEY])["z"]
            cov = self.module.covariate_embedding_from_tensors(tensors)
            pred = self.module.generative(z, cov, self.module.linear_from_tensors(tensors))["protein"]
            out.append(pred.cpu().numpy())
        self.module.train(was_training)
        return np.vstack(out) if out else np.zeros((0, self.n_proteins), dtype=np.float32)

    def _validation_score(self, val_idx: np.ndarray, monitor: str) -> float:
        """The early-stopping score of the current module on the validation cells."""
        from crossmodalnet._metrics import pearson_per_cell, pearson_per_protein

        pred = self._predict_registered(np.asarray(val_idx)).astype(np.float64)
        true = self._registered_dense(REGISTRY_KEYS.PROTEIN_KEY, val_idx)
        score = pearson_per_protein if monitor == "pearson_protein_validation" else pearson_per_cell
        return float(np.nanmean(score(pred, true)))

    def _registered_dense(self, registry_key: str, idx: np.ndarray) -> np.ndarray:
        block = self.adata_manager.get_from_registry(registry_key)[np.asarray(idx)]
        return block.toarray().astype(np.float64) if sparse.issparse(block) else np.asarray(block, dtype=np.float64)

    def _fit_linear_path(self, train_idx: np.ndarray, val_idx: np.ndarray) -> float:
        """Fit the linear path as ridge regression on the training cells, penalty chosen on validation cells.

        Proteins are taken on the loss scale (standardised with ``standardize_protein``). Genes and
        proteins are centred within each time point of the training cells, so every trained time
        point gets its own intercept; an unseen time point gets the intercepts interpolated with
        the same weights as its time embedding. The penalty is one value for all proteins, chosen
        from :data:`LINEAR_ALPHA_GRID` (times the mean squared singular value) by the validation
        mean squared error; without validation cells, by generalised cross-validation on the training
        cells. All candidates come from one SVD of the centred training RNA.

        Parameters
        ----------
        train_idx
            Registered cells to fit on.
        val_idx
            Registered cells to choose the penalty on (may be empty).

        Returns
        -------
        The chosen penalty (absolute).
        """
        from scipy import linalg

        train_idx, val_idx = np.asarray(train_idx), np.asarray(val_idx)
        codes = self.adata_manager.get_from_registry(REGISTRY_KEYS.TIME_KEY).reshape(-1).astype(np.int64)
        X = self._registered_dense(REGISTRY_KEYS.X_KEY, train_idx)
        Y = (
            self.module.scale_protein(
                torch.as_tensor(self._registered_dense(REGISTRY_KEYS.PROTEIN_KEY, train_idx), dtype=torch.float32)
            )
            .double()
            .numpy()
        )
        n_time = len(self.time_categories)
        t_train = codes[train_idx]
        mean_x = np.tile(X.mean(0), (n_time, 1))
        mean_y = np.tile(Y.mean(0), (n_time, 1))
        for c in np.unique(t_train):
            mean_x[c], mean_y[c] = X[t_train == c].mean(0), Y[t_train == c].mean(0)
        Xc, Yc = X - mean_x[t_train], Y - mean_y[t_train]
        U, sv, Vt = linalg.svd(Xc, full_matrices=False, lapack_driver="gesdd")
        keep = sv > sv.max() * 1e-10 if sv.size else sv.astype(bool)
        U, sv, Vt = U[:, keep], sv[keep], Vt[keep]
        UtY = U.T @ Yc
        alphas = np.asarray(LINEAR_ALPHA_GRID) * float(np.mean(sv**2)) if sv.size else np.ones(1)
        t_val = codes[val_idx]
        val_known = np.isin(t_val, t_train)
        if val_idx.size and val_known.any():
            Xv = self._registered_dense(REGISTRY_KEYS.X_KEY, val_idx[val_known])
            Yv = (
                self.module.scale_protein(
                    torch.as_tensor(
                        self._registered_dense(REGISTRY_KEYS.PROTEIN_KEY, val_idx[val_known]), dtype=torch.float32
                    )
                )
                .double()
                .numpy()
            )
            tv = t_val[val_known]
            P = (Xv - mean_x[tv]) @ Vt.T
            errors = [np.mean((P @ ((sv / (sv**2 + a))[:, None] * UtY) + mean_y[tv] - Yv) ** 2) for a in alphas]
        else:
            n = X.shape[0]
            resid_total = np.sum(Yc**2) - np.sum(UtY**2)
            errors = []
            for a in alphas:
                shrink = sv**2 / (sv**2 + a)
                rss = resid_total + np.sum(((1 - shrink)[:, None] * UtY) ** 2)
                errors.append(rss / n / max(1 - shrink.sum() / n, 1e-6) ** 2)
        alpha = float(alphas[int(np.argmin(errors))])
        W = Vt.T @ ((sv / (sv**2 + alpha))[:, None] * UtY)
        intercept = mean_y - mean_x @ W
        self.module.fit_linear_path(torch.as_tensor(W), torch.as_tensor(intercept), alpha)
        logger.info("linear path: ridge alpha %.4g (%d candidates)", alpha, len(alphas))
        return alpha

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
        where = f"mdata[{rna_key!r}]" + (f".layers[{layer!r}]" if layer else ".X")
        target_sum = query_normalization(X, self.rna_normalization, where, "CrossmodalNet")
        if target_sum is not None:
            X = NormalizedRows(X, target_sum)
        rows = rna.obs_names.get_indexer(mdata.obs_names)
        return X, rows

    @property
    def training_cells(self) -> pd.Index | None:
        """Names of the training and validation cells (the cells the weights were fitted or selected on).

        Saved with the model, so metrics on any MuData can leave these cells out; ``None`` before
        training and for models saved before it was recorded.
        """
        cells = getattr(self, "training_cells_", None)
        return None if cells is None else pd.Index(np.asarray(cells, dtype=str))

    @property
    def rna_normalization(self) -> dict | None:
        """How the training RNA was normalised, recorded at initialisation and saved with the model.

        ``{'method': 'log1p_normalize_total', 'target_sum': ...}`` (from :func:`crossmodalnet.pp.log_normalize`,
        or ``'inferred': True`` from the data), ``{'method': 'counts'}`` or ``{'method': 'unknown'}``;
        ``None`` for models saved before it was recorded. Query RNA with raw counts is normalised the
        same way, or refused when the method is unknown.
        """
        return getattr(self, "rna_normalization_", None)

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
        elif resolve_obs_column(mdata, time_key) is not None:
            codes, values = _factorize(mdata.obs[resolve_obs_column(mdata, time_key)])
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
        elif resolve_obs_column(mdata, batch_key) is not None:
            codes, values = _factorize(mdata.obs[resolve_obs_column(mdata, batch_key)])
        else:
            logger.warning(
                "`mdata.obs` has no batch column %r: every cell gets the average embedding of the trained batches "
                "%s (pass `batch=` to choose one)",
                batch_key,
                b_cats.tolist()[:10],
            )
            return np.full(n, len(b_cats), dtype=np.int64)
        lookup = b_cats.get_indexer([str(v) for v in values])
        unknown = sorted({str(v) for v, c in zip(values, lookup, strict=True) if c < 0})
        if batch is not None and unknown:
            raise ValueError(f"Unknown batch category {batch!r}; pass `batch=` with one of {b_cats.tolist()}.")
        # a new donor or batch (or a missing value) gets the average of the trained batch embeddings
        lookup = np.append(np.where(lookup < 0, len(b_cats), lookup), len(b_cats))
        out = lookup[codes].astype(np.int64)
        n_unseen = int((out == len(b_cats)).sum())
        if n_unseen:
            shown = unknown[:5] + (["<missing>"] if (codes < 0).any() else [])
            logger.warning(
                "%d cell(s) have batch categories the model was not trained on (%s): they get the average embedding "
                "of the trained batches (pass `batch=` to choose one of %s)",
                n_unseen,
                shown,
                b_cats.tolist()[:10],
            )
        return out

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
        # last row: the average batch embedding, for batches not seen in training
        b_table = torch.cat([b_table, b_table.mean(dim=0, keepdim=True)])
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
            Predict every cell as this batch category instead of its own. Cells whose own category
            was not seen in training (a new donor), or that have no batch column, get the average of
            the trained batch embeddings, with a warning.
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
            # the linear path is linear in the time weights: both interpolations share it
            linear = self.module.linear_prediction(x, w) if self.module.linear_path else None
            if interpolation == "embedding":
                pred = self.module.generative(z, w @ table + b, linear)["protein"]
            else:
                pred = sum(
                    w[:, c : c + 1] * self.module.generative(z, table[c] + b, linear)["protein"]
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

    def _training_gene_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of every gene over the training cells (for saliency scaling and baselines).

        Fitted by :meth:`train` (``gene_moments_``, saved with the model); a model trained before that
        attribute existed recomputes them from scvi-tools' ``train_indices`` when it still has them.
        """
        moments = getattr(self, "gene_moments_", None)
        if moments is None:
            train_idx = getattr(self, "train_indices", None)
            if train_idx is None or self.adata_manager is None:
                raise ValueError(
                    "This model has no gene statistics of its training cells (it was saved by an older version). "
                    "Use `method='gradient'` or `method='integrated_gradients'` with `baseline='zeros'`, "
                    "or retrain the model."
                )
            self._fit_gene_moments(np.asarray(train_idx))
            moments = self.gene_moments_
        return (
            torch.as_tensor(np.asarray(moments["mean"]), dtype=torch.float32),
            torch.as_tensor(np.asarray(moments["sd"]), dtype=torch.float32),
        )

    def _fit_gene_moments(self, train_idx: np.ndarray) -> None:
        """Store the mean and standard deviation of every gene over the training cells in ``gene_moments_``."""
        mean, sd = self._column_moments(REGISTRY_KEYS.X_KEY, np.asarray(train_idx))
        self.gene_moments_ = {"mean": mean.numpy(), "sd": sd.numpy()}

    def get_saliency(
        self,
        mdata: MuData | None = None,
        *,
        proteins: str | Sequence[str] | None = None,
        method: Literal[
            "gradient", "gradient_x_sd", "gradient_x_input", "integrated_gradients", "smoothgrad"
        ] = "gradient",
        aggregate: Literal["sum", "mean", "abs_sum", "abs_mean"] = "sum",
        baseline: Literal["zeros", "mean"] | None = None,
        indices: Sequence[int] | np.ndarray | None = None,
        time: object = None,
        n_steps: int = 50,
        n_samples: int = 20,
        noise_scale: float = 0.15,
        random_state: int = 0,
        batch_size: int = 256,
    ) -> pd.DataFrame:
        r"""Rank genes for each protein by saliency :cite:p:`Simonyan2013,Yang2023`.

        Each cell :math:`i` gets an attribution :math:`a_i(g, j)` of gene :math:`g` to protein
        :math:`j`, and ``aggregate`` combines them over the chosen cells. With
        :math:`\partial_g \hat y_j(x) = \partial \hat y_j / \partial x_g` at expression :math:`x`,
        :math:`s_g` the gene's standard deviation over the training cells and :math:`b` the baseline:

        - ``"gradient"``: :math:`a_i = \partial_g \hat y_j(x_i)`, the paper's :math:`\gamma_j`
          (with ``aggregate="sum"``). Its unit is protein per unit of log-expression, which favours
          genes that vary little.
        - ``"gradient_x_sd"``: :math:`a_i = s_g\,\partial_g \hat y_j(x_i)`, the change of the protein
          per gene standard deviation (attributions in standardised-gene units).
        - ``"gradient_x_input"``: :math:`a_i = (x_{ig} - b_g)\,\partial_g \hat y_j(x_i)`.
        - ``"integrated_gradients"`` :cite:p:`Sundararajan2017`:
          :math:`a_i = (x_{ig} - b_g)\,\frac{1}{K}\sum_k \partial_g \hat y_j(b + \alpha_k (x_i - b))`
          with :math:`\alpha_k = (k + 1/2)/K`, ``K = n_steps``. The attributions of a cell sum to
          :math:`\hat y_j(x_i) - \hat y_j(b)`.
        - ``"smoothgrad"`` :cite:p:`Smilkov2017`: :math:`a_i = s_g\,\frac{1}{N}\sum_n \partial_g \hat
          y_j(x_i + \varepsilon_n)` with :math:`\varepsilon_{ng} \sim \mathcal N(0, (\sigma s_g)^2)`,
          ``N = n_samples``, :math:`\sigma` = ``noise_scale``: ``"gradient_x_sd"`` averaged over noisy
          copies of each cell.

        Gradients are taken with respect to the registered RNA input (e.g. log-normalised
        expression), with the network in evaluation mode, batched: one backward pass per batch (and
        per step or noise sample) computes all requested proteins at once.

        Parameters
        ----------
        mdata
            MuData whose RNA modality has the model's genes; defaults to the registered MuData.
        proteins
            Proteins to compute; all by default.
        method
            Attribution per cell, see above: ``"gradient"`` (the paper's saliency),
            ``"gradient_x_sd"``, ``"gradient_x_input"``, ``"integrated_gradients"`` or ``"smoothgrad"``.
        aggregate
            How per-cell attributions are combined: ``"sum"`` (the paper's :math:`\gamma_j`, signed),
            ``"mean"`` (sum divided by the number of cells, comparable across cell subsets),
            ``"abs_sum"`` / ``"abs_mean"`` (magnitudes, so opposite effects in different cells do not
            cancel). Attributions relative to the mean cell (``baseline="mean"``) are positive in some
            cells and negative in others by construction: combine them with ``"abs_sum"`` or ``"abs_mean"``.
        baseline
            Reference expression :math:`b` of ``"gradient_x_input"`` and ``"integrated_gradients"``:
            ``"zeros"`` (no expression; the default) or ``"mean"`` (the mean training cell). Other
            methods take no baseline.
        indices
            Positions of the cells to use (e.g. one time point or cell type); all cells by default.
        time
            Evaluate every cell at this time point instead of its own.
        n_steps
            Riemann steps of integrated gradients.
        n_samples
            Noisy copies of each cell for SmoothGrad.
        noise_scale
            Standard deviation of SmoothGrad's noise, in units of each gene's standard deviation over
            the training cells.
        random_state
            Seed of SmoothGrad's noise. The same seed, cells and ``batch_size`` give the same scores on CPU.
        batch_size
            Cells per backward pass; memory grows with ``batch_size × n_genes × n_proteins``.

        Returns
        -------
        Genes × proteins DataFrame of saliency scores; rank genes by their magnitude (for signed
        aggregates, positive = the gene raises the protein).
        """
        self._check_trained()
        if method not in _SALIENCY_METHODS:
            raise ValueError(f"`method` must be one of {', '.join(map(repr, _SALIENCY_METHODS))}, got {method!r}.")
        if aggregate not in ("sum", "mean", "abs_sum", "abs_mean"):
            raise ValueError(f"`aggregate` must be one of 'sum', 'mean', 'abs_sum', 'abs_mean', got {aggregate!r}.")
        if baseline is not None and method not in _BASELINE_METHODS:
            raise ValueError(
                f"`baseline` applies to 'gradient_x_input' and 'integrated_gradients' only; "
                f"drop it for method={method!r}."
            )
        baseline = "zeros" if baseline is None else baseline
        if baseline not in ("zeros", "mean"):
            raise ValueError(f"`baseline` must be 'zeros' or 'mean', got {baseline!r}.")
        if n_steps < 1:
            raise ValueError(f"`n_steps` must be at least 1, got {n_steps}.")
        if n_samples < 1:
            raise ValueError(f"`n_samples` must be at least 1, got {n_samples}.")
        if not (np.isfinite(noise_scale) and noise_scale >= 0):
            raise ValueError(
                f"`noise_scale` must be a non-negative number (gene standard deviations), got {noise_scale!r}."
            )
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
        gene_mean = gene_sd = None
        if method in ("gradient_x_sd", "smoothgrad") or (method in _BASELINE_METHODS and baseline == "mean"):
            gene_mean, gene_sd = (t.to(self.device) for t in self._training_gene_moments())
        generator = torch.Generator().manual_seed(int(random_state)) if method == "smoothgrad" else None
        self.module.eval()
        n_cells = 0
        total = torch.zeros(len(names), self.n_genes, dtype=torch.float64)
        eye = torch.eye(len(names), device=self.device)

        def gradients(xs: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            """Proteins × cells × genes gradient at expression ``xs`` (one batched backward pass)."""
            xs = xs.detach().requires_grad_(requires_grad=True)
            with torch.enable_grad():
                # `w`: the time weights of the current batch (set in the loop below)
                linear = self.module.linear_prediction(xs, w) if self.module.linear_path else None
                out = self.module.generative(self.module.inference(xs)["z"], c, linear)["protein"]
                out = out[:, cols.to(xs.device)]
                # grad_outputs[j] selects protein j for every cell
                (g,) = torch.autograd.grad(
                    out, xs, grad_outputs=eye[:, None, :].expand(-1, xs.shape[0], -1), is_grads_batched=True
                )
            return g

        for pos, x in self._iter_batches(X, rows, batch_size):
            w, b = covariates(pos)
            c = w @ table + b
            n_cells += x.shape[0]
            ref = gene_mean.expand_as(x) if baseline == "mean" and method in _BASELINE_METHODS else torch.zeros_like(x)
            if method in ("gradient", "gradient_x_sd"):
                per_cell = gradients(x, c)
            elif method == "gradient_x_input":
                per_cell = gradients(x, c) * (x - ref)
            elif method == "integrated_gradients":
                acc = torch.zeros(len(names), *x.shape, device=x.device)
                for k in range(n_steps):
                    acc += gradients(ref + (x - ref) * ((k + 0.5) / n_steps), c)
                per_cell = acc / n_steps * (x - ref)
            else:  # smoothgrad
                acc = torch.zeros(len(names), *x.shape, device=x.device)
                for _ in range(n_samples):
                    noise = torch.randn(x.shape, generator=generator).to(x.device)
                    acc += gradients(x + noise * (noise_scale * gene_sd), c)
                per_cell = acc / n_samples
            if method in ("gradient_x_sd", "smoothgrad"):
                per_cell = per_cell * gene_sd
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
        # scvi-tools logs "File ... already downloaded" for every local model file; nothing is downloaded here
        with _without_messages("scvi.data._download", "already downloaded"):
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
