"""The CrossmodalNet model class: MuData registration, training and getters.

The other jobs of the model live in named modules: input checks (``_validation``), the split
(``_split``), closed-form fitting before training (``_fitting``, ``_linear``), time points
(``_time``), batched inference (``_inference``), saliency (``_saliency``), uncertainty
(``_uncertainty``), query genes (``_query``), presets (``_presets``) and save/load (``_save_load``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import torch
from scvi import settings
from scvi.dataloaders import DataSplitter
from scvi.model._utils import use_distributed_sampler
from scvi.model.base import BaseModelClass
from scvi.train import TrainRunner

from crossmodalnet._constants import DEFAULT_PROTEIN_KEY, DEFAULT_RNA_KEY, REGISTRY_KEYS
from crossmodalnet._settings import quiet_third_party, stdout_is_interactive
from crossmodalnet._settings import settings as cmn_settings
from crossmodalnet._utils import (
    announce_once,
    get_layer,
    is_dask_array,
    is_nonnegative_number,
    protein_normalization_record,
    rna_normalization_record,
)
from crossmodalnet.module import CrossmodalModule
from crossmodalnet.train import FaderGradNormPlan

from ._callbacks import TrainingCallbacksMixin
from ._data import CrossmodalDataManager
from ._disentangle import DisentangleMixin, check_disentangle_settings, resolve_disentangle_kwargs
from ._docstrings import docs
from ._fitting import TrainingFitMixin
from ._inference import BatchedInferenceMixin
from ._presets import (
    LINEAR_PATH_GENES,
    MONITORS,
    default_input_features,
    resolve_input_reduction,
    resolve_preset,
    train_settings,
)
from ._query import QueryMixin, gene_id_columns
from ._query_mapping import QueryMappingMixin
from ._registration import RegisteredNamesMixin, checked_fields
from ._saliency import SaliencyMixin
from ._save_load import SaveLoadMixin
from ._split import SplitMixin
from ._time import TimeMixin
from ._uncertainty import ProteinUncertainty, UncertaintyMixin

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mudata import MuData

logger = logging.getLogger(__name__)

_NOT_TRAINED = "The model is not trained yet: call `model.train()` first."


def _apply_seed() -> int | None:
    """Seed Python, NumPy and torch with ``cmn.settings.seed`` (if set) and return it."""
    seed = cmn_settings.seed
    if seed is not None:
        from lightning.pytorch import seed_everything

        seed_everything(seed, verbose=False)
    return seed


# train() arguments that set the data splitter: not accepted again in `datasplitter_kwargs`
_SPLITTER_ARGS = ("train_size", "validation_size", "batch_size", "load_sparse_tensor", "distributed_sampler")


class CrossmodalNet(
    SaliencyMixin,
    UncertaintyMixin,
    QueryMixin,
    QueryMappingMixin,
    BatchedInferenceMixin,
    TimeMixin,
    SplitMixin,
    TrainingFitMixin,
    TrainingCallbacksMixin,
    DisentangleMixin,
    RegisteredNamesMixin,
    SaveLoadMixin,
    BaseModelClass,
):
    """Predict surface proteins from RNA with a time-aware Fader network :cite:p:`Yang2023`.

    MLP1 encodes genes into a basal latent ``z``; a learnable embedding of the time point
    (and of the batch, if registered) is added to ``z``; MLP2 decodes the sum into proteins.
    Discriminators predict time (and batch) from ``z`` and the encoder is trained against them,
    so ``z`` carries no time information. The loss is ``w1·NLC + w2·(MSE − λ·CE)`` with ``w1, w2``
    balanced by GradNorm. Unseen time points between two trained ones are predicted from the
    linear interpolation of their embeddings.

    The default preset adds a linear path ("wide and deep"): a ridge regression from genes to
    proteins with one intercept per time point, fitted in closed form on the training cells with
    its genes (all, or the genes most correlated with the proteins) and penalty chosen on the
    validation cells. The networks learn the residual over it, starting
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
        it. The preset also sets :meth:`train`'s ``max_epochs``, ``early_stopping_patience`` and
        ``early_stopping_min_delta`` when those are ``None`` (docs pages *Benchmarks* and *Development notes*).
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
        only, never validation or test cells) and saved with the model. Off by default: it amplifies
        barely expressed, noisy genes (docs page *Development notes*).
    input_reduction
        Optional input reduction before MLP1, fitted on the training cells at the first
        :meth:`train` call and saved with the model; the model still takes all registered genes.
        ``"hvg"``: keep the ``n_input_features`` most variable genes of the training cells
        (:func:`scanpy.pp.highly_variable_genes`, ``flavor="seurat"`` on the registered
        log-normalised RNA); the other genes get zero saliency. ``"screen"``: keep the
        ``n_input_features`` genes most correlated (Pearson, by absolute value) with the proteins
        over the training cells, taken in rounds so that every protein first gets its own best
        genes (each protein's top gene, then each protein's second, ...); a supervised screen for
        proteins driven by a few genes. The other genes get zero saliency through the networks, but
        the linear path still sees every gene. ``"svd"``: project onto the first
        ``n_input_features`` components of a :class:`~sklearn.decomposition.TruncatedSVD` of the
        training cells. Fewer input features shrink the first layer (the largest) and speed up
        training on 10⁴–10⁵ genes. ``None``: all genes, as in the paper. ``"auto"`` (default): the
        preset's choice, which is all genes except with the ``"default"`` preset on a large reference (at
        least 20,000 registered cells, more than 1,024 genes), where it is ``"screen"`` with 256 genes,
        1,024 from 100,000 registered cells (docs page *Scale*, "Large references"). The resolved choice
        is what the model saves.
    n_input_features
        Features kept by ``input_reduction``: default 2,000 for ``"hvg"``, 256 for ``"screen"`` (1,024
        when ``"auto"`` chooses the screen for a reference of at least 100,000 cells) and 256 for
        ``"svd"``. It must be between 1 and the number of genes - 1.
    standardize_protein
        Train on proteins centred and scaled by their mean and standard deviation over the
        training cells (fitted at the first :meth:`train` call, saved with the model). The losses
        are then computed on that scale, so each protein weighs the same in the MSE, as it does in
        per-protein Pearson; predictions are still returned on the registered scale. Off in
        the paper preset (the paper trains on the registered scale); on by the default preset.
    linear_path
        Add the linear ridge path beside the networks (default preset: on; paper preset: off). Its
        weights are fitted at the first :meth:`train` call on the training cells and saved with the
        model. A held-out time point gets its intercepts interpolated with the same weights as its
        time embedding.
    linear_path_genes
        Genes the linear path is fitted on, chosen together with its penalty by the validation
        mean squared error (over validation cells of trained time points; without any, by
        generalised cross-validation on the training cells). ``"all"``: every gene.
        ``"screen"``: the 256 genes most correlated with the proteins over the training cells (the screen of
        ``input_reduction="screen"``). ``"auto"`` (default preset): the best of all genes and the
        top 64, 256 and 1,024 screened genes (those fewer than the genes). A ridge on thousands of
        genes can fit a few hundred training cells almost exactly and leave the networks only
        noise to learn; fewer genes then generalise better, while proteins that follow broad
        programmes of many genes favour all genes. Genes outside the chosen set get zero linear
        weight. The choice, the genes (positions in the registered RNA) and each candidate's
        error are in ``model.linear_path_genes_`` after the first :meth:`train`. Ignored without
        a linear path. With more than 4,096 genes and more than 4,096 training cells, all genes
        are out of reach of the closed form (docs page *Scale*): the screen's first 4,096 genes
        (``"screen4096"``) stand in for them, or its first 2,048 (``"screen2048"``) from 20,000
        registered cells (default preset).
    linear_path_coding_genes
        Add each protein's coding gene(s) to every screened gene set of the linear path
        (``linear_path_genes`` ``"screen"`` or ``"auto"``), so that a protein's own mRNA can enter
        the ridge even when the screen, which keeps only a few genes per protein, misses it
        (default preset: on). The genes come from :func:`crossmodalnet.pp.protein_genes`, matched
        case-insensitively to the registered gene names; proteins it does not know add nothing.
        The positions added are in ``model.linear_path_genes_["coding_genes"]`` (empty when no
        screened set was fitted).
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
    See the getting-started tutorial for a complete workflow. Register log-normalised RNA and
    normalised (CLR or DSB) proteins, e.g. with :func:`crossmodalnet.pp.log_normalize` and
    :func:`crossmodalnet.pp.clr`; query RNA with raw counts is normalised as the training RNA was
    (:attr:`rna_normalization`), or refused. On CPU, the same ``cmn.settings.seed`` (set before the
    model is built), data and arguments give identical weights, histories and predictions, also for two
    models in one process; on GPU some CUDA kernels are not deterministic
    (``train(..., deterministic=True)``; docs page *Past one machine*).
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
        input_reduction: Literal["auto", "hvg", "screen", "svd"] | None = "auto",
        n_input_features: int | None = None,
        standardize_protein: bool | None = None,
        linear_path: bool | None = None,
        linear_path_genes: Literal["all", "screen", "auto"] | None = None,
        linear_path_coding_genes: bool | None = None,
        registry: dict | None = None,
    ):
        if input_reduction not in ("auto", None, "hvg", "screen", "svd"):
            raise ValueError(
                f"`input_reduction` must be 'auto', None, 'hvg', 'screen' or 'svd', got {input_reduction!r}."
            )
        if linear_path_genes is not None and linear_path_genes not in LINEAR_PATH_GENES:
            raise ValueError(
                f"`linear_path_genes` must be one of {list(LINEAR_PATH_GENES)}, got {linear_path_genes!r}."
            )
        if linear_path_coding_genes is not None and not isinstance(linear_path_coding_genes, bool | np.bool_):
            raise ValueError(f"`linear_path_coding_genes` must be True or False, got {linear_path_coding_genes!r}.")
        resolved = resolve_preset(
            preset,
            {
                "n_latent": n_latent,
                "dropout_rate": dropout_rate,
                "use_batch_norm": use_batch_norm,
                "n_hidden_discriminator": n_hidden_discriminator,
                "lambda_dis": lambda_dis,
                "standardize_input": standardize_input,
                "standardize_protein": standardize_protein,
                "linear_path": linear_path,
                "linear_path_genes": linear_path_genes,
                "linear_path_coding_genes": linear_path_coding_genes,
            },
        )
        super().__init__(mdata, registry=registry)
        _apply_seed()  # the initial weights
        self.preset = preset
        auto = input_reduction == "auto"
        n_cells = self.summary_stats["n_cells"]
        n_genes = self.summary_stats["n_vars"]
        input_reduction = resolve_input_reduction(preset, input_reduction, n_cells, n_genes)
        if n_input_features is None:
            n_input_features = default_input_features(preset, input_reduction, n_cells, n_genes, auto=auto)
        n_time = self.summary_stats[f"n_{REGISTRY_KEYS.TIME_KEY}"]
        n_batch = self.summary_stats[f"n_{REGISTRY_KEYS.BATCH_KEY}"]
        self.module = self._module_cls(
            n_input=self.summary_stats["n_vars"],
            n_output=self.summary_stats[f"n_{REGISTRY_KEYS.PROTEIN_KEY}"],
            n_cats_per_cov=[n_time, n_batch],
            input_reduction=input_reduction,
            n_input_features=n_input_features,
            **{k: v for k, v in resolved.items() if k not in ("linear_path_genes", "linear_path_coding_genes")},
        )
        self.linear_path_genes = resolved["linear_path_genes"]
        self.linear_path_coding_genes = bool(resolved["linear_path_coding_genes"])
        self.linear_path_genes_: dict | None = None
        self.split_: dict = {}
        self.trained_time_codes_: np.ndarray | None = None
        self.training_cells_: np.ndarray | None = None
        self.rna_normalization_: dict | None = None
        self.protein_normalization_: dict | None = None
        self.gene_ids_: dict[str, np.ndarray] = {}
        if mdata is not None:
            rna = mdata.mod[self.get_setup_arg("rna_key")]
            X = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
            self.rna_normalization_ = rna_normalization_record(X, rna.uns)
            self.protein_normalization_ = protein_normalization_record(
                self.adata_manager.get_from_registry(REGISTRY_KEYS.PROTEIN_KEY),
                mdata.mod[self.get_setup_arg("protein_key")].uns,
                layer=self.get_setup_arg("protein_layer"),
            )
            self.gene_ids_ = gene_id_columns(rna.var)
            self.measured_cells_ = self._count_measured_cells()
        self._model_summary_string = (
            f"CrossmodalNet: {self.n_genes} genes → {self.n_proteins} proteins, n_latent={resolved['n_latent']}, "
            f"{n_time} time point(s), {n_batch} batch(es)"
            + ("" if input_reduction is None else f", input {input_reduction} → {n_input_features} features")
            + (", standardised proteins" if resolved["standardize_protein"] else "")
            + (f", linear path ({resolved['linear_path_genes']} genes)" if resolved["linear_path"] else "")
            + f" (preset {preset!r})"
        )
        # the resolved settings are what the model saves
        self.init_params_ = self._get_init_params({**locals(), **resolved})

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
        protein_mask_layer: str | None = None,
        **kwargs,
    ) -> None:
        """Register the RNA and protein modalities and the time (and batch) covariates.

        Nothing is computed into ``mdata.obs``; scvi-tools' :class:`~scvi.data.AnnDataManager`
        records its registry (its usual ``_scvi_*`` bookkeeping entries).

        **Missing proteins.** NaN in the registered protein matrix means "not measured" (references
        whose panels differ, joined with ``anndata.concat(join="outer")``); so does ``False`` in the
        ``protein_mask_layer``. Missing values are never inferred from zeros: a protein constant (e.g.
        all zero) in every cell of one ``batch_key`` or ``time_key`` group, as a panel without that
        antibody gives after a join that fills zeros, is warned about by name and kept as measured.
        Every loss, metric, closed-form fit and calibration uses measured values only; the model
        records how many cells measured each protein in each batch (:attr:`measured_cells`). A
        protein no cell measured, infinite values and NaN in a sparse or backed protein matrix are
        refused with a :class:`ValueError`.

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
        protein_mask_layer
            Optional boolean layer of the protein modality, ``True`` where a value was measured, e.g.
            after joining sparse panels, which fills zeros. Values where it is ``False`` are ignored
            whatever they hold; a NaN it marks as measured is refused.
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields`.
        """
        # first statement: only the call's arguments may enter the saved registry
        setup_method_args = cls._get_setup_method_args(**locals())
        mudata_fields_ = checked_fields(
            mdata,
            rna_key=rna_key,
            protein_key=protein_key,
            rna_layer=rna_layer,
            protein_layer=protein_layer,
            time_key=time_key,
            batch_key=batch_key,
            protein_mask_layer=protein_mask_layer,
        )
        adata_manager = CrossmodalDataManager(fields=mudata_fields_, setup_method_args=setup_method_args)
        adata_manager.register_fields(mdata, **kwargs)
        cls.register_manager(adata_manager)

    @classmethod
    def setup_anndata(cls, *args, **kwargs) -> None:
        """Not supported: CrossmodalNet needs RNA and protein modalities; use :meth:`~crossmodalnet.model.CrossmodalNet.setup_mudata`."""
        raise TypeError(
            "CrossmodalNet trains on a MuData with RNA and protein modalities: use `CrossmodalNet.setup_mudata`."
        )

    # --- saved state ------------------------------------------------------------------------------
    @property
    def training_cells(self) -> pd.Index | None:
        """Names of the training and validation cells (the cells the weights were fitted or selected on).

        Saved with the model, so metrics on any MuData can leave these cells out; ``None`` before
        training and for models saved before it was recorded.
        """
        cells = getattr(self, "training_cells_", None)
        return None if cells is None else pd.Index(np.asarray(cells, dtype=str))

    @property
    def measured_cells(self) -> pd.DataFrame | None:
        """Cells that measured each protein (rows) in each registered batch (columns), counted at initialisation.

        Saved with the model. A protein of another panel has 0 in the batches that did not measure it
        (NaN in the registered matrix, or ``False`` in ``protein_mask_layer``). ``None`` for models saved
        before it was recorded.
        """
        record = getattr(self, "measured_cells_", None)
        if record is None:
            return None
        return pd.DataFrame(
            np.asarray(record["counts"], dtype=np.int64),
            index=pd.Index(record["proteins"], name="protein"),
            columns=pd.Index(record["batches"], name="batch"),
        )

    @property
    def rna_normalization(self) -> dict | None:
        """How the training RNA was normalised, recorded at initialisation and saved with the model.

        ``{'method': 'log1p_normalize_total', 'target_sum': ...}`` (from :func:`crossmodalnet.pp.log_normalize`,
        or ``'inferred': True`` from the data), ``{'method': 'counts'}`` or ``{'method': 'unknown'}``;
        ``None`` for models saved before it was recorded. Query RNA with raw counts is normalised the
        same way, or refused when the method is unknown.
        """
        return getattr(self, "rna_normalization_", None)

    @property
    def protein_normalization(self) -> dict | None:
        """How the training proteins were transformed, recorded at initialisation and saved with the model.

        ``{'method': 'clr', 'axis': ..., 'protein_names': ...}`` (``axis=0`` also ``log_mean``) from the
        record of :func:`crossmodalnet.pp.clr` on the registered ``.X``, ``{'method': 'counts'}``,
        ``{'method': 'dsb'}`` or ``{'method': 'unknown'}``; ``None`` for models saved before it was recorded.
        :func:`crossmodalnet.tl.predict_protein` scores raw observed ADT counts after the same CLR, and
        skips the metrics with a warning when the transform cannot be repeated.
        """
        return getattr(self, "protein_normalization_", None)

    def _check_if_trained(self, warn: bool = True, message: str = _NOT_TRAINED) -> None:  # noqa: FBT001, FBT002
        """scvi-tools' check that the model is trained; raises :class:`ValueError` (not ``RuntimeError``)."""
        if not self.is_trained_ and not warn:
            raise ValueError(message)
        super()._check_if_trained(warn=warn, message=message)

    # --- training --------------------------------------------------------------------------------
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
        early_stopping_min_delta: float | None = None,
        early_stopping_monitor: Literal["pearson_cell_validation", "pearson_protein_validation"] = (
            "pearson_protein_validation"
        ),
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        lr: float | None = None,
        weight_decay: float | None = None,
        lr_discriminator: float | None = None,
        weight_decay_discriminator: float | None = None,
        learning_step: int | None = None,
        gradient_penalty: float | None = None,
        lr_gradnorm: float | None = None,
        gradnorm_alpha: float | None = None,
        input_group_lasso: float | None = None,
        reduce_lr_on_plateau: bool | None = None,
        ema_decay: float | None = None,
        disentangle_epochs: int | None = None,
        disentangle_tolerance: float | None = None,
        disentangle_kwargs: dict | None = None,
        plan_kwargs: dict | None = None,
        datasplitter_kwargs: dict | None = None,
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
            Seed of the split; defaults to ``cmn.settings.seed``, then to ``scvi.settings.seed`` (0 if both
            are unset).
        batch_size
            Mini-batch size.
        sparse_batches
            Pass sparse RNA mini-batches to the first layer as sparse CSR tensors instead of
            densifying each mini-batch (the registered matrix is never densified as a whole either
            way). Off by default: on few CPU cores the sparse backward pass can be slower than the
            dense one (docs page *Scale*).
        early_stopping
            Stop when ``early_stopping_monitor`` has not improved for ``early_stopping_patience``
            epochs. Whether or not it stops early, the weights of the best validation epoch are
            restored at the end. With a linear path, the state before the first epoch is a candidate
            too (``model.split_["best_epoch"]`` is then -1).
        early_stopping_patience
            Epochs without improvement before stopping; ``None`` takes the preset's value (10 for both).
        early_stopping_min_delta
            Smallest rise of ``early_stopping_monitor`` over its best value so far that counts as an
            improvement for early stopping (best-epoch restoration keeps the best epoch either way).
            ``None`` takes the preset's value: 0, or 0.0005 with the ``"default"`` preset on a large
            reference (at least 20,000 registered cells), whose validation cells keep measuring gains
            too small to matter, so that training would otherwise run on to ``max_epochs`` (docs page
            *Scale*, "Large references").
        early_stopping_monitor
            Validation Pearson to monitor: mean per protein (default) or mean per cell (the paper's
            Kaggle metric). Per-cell r is inflated by differences between protein means and levels
            off early (docs page *Development notes*).
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
            relative to genes (docs page *Development notes*). 0 is the paper's objective. Its strength
            interacts with ``lr`` (Adam) and ``n_latent``; tune it on validation cells.
            With ``input_reduction``, the groups are the reduced features.
        reduce_lr_on_plateau
            Multiply the networks' learning rate by 0.3 each time the monitored validation Pearson has not
            improved for 3 epochs (``plan_kwargs`` ``lr_factor``, ``lr_patience``: 2 epochs tolerated,
            ``lr_min``); the learning rate of each epoch is ``model.history_["lr"]``. ``None`` takes the
            preset's choice: on with the ``"default"`` preset for a large reference (at least 20,000
            registered cells), off otherwise and with ``"paper"`` (docs page *Scale*, "Large references").
        ema_decay
            Validate and keep an exponential moving average of the weights instead of the weights themselves
            (``average ← ema_decay · average + (1 − ema_decay) · weights`` per training step, applied every
            4 steps as ``ema_decay⁴``; Lightning's :class:`~lightning.pytorch.callbacks.WeightAveraging`): early stopping, the
            learning-rate schedule and best-epoch restoration then judge the average, and the model keeps
            the best epoch's average. 0 is no averaging. ``None`` takes the preset's choice: 0.999 (an
            average over about 1,000 steps) with the ``"default"`` preset for a large reference, 0 otherwise.
        disentangle_epochs
            Epochs of the disentangling phase after best-epoch restoration: the encoder alone trains
            with MLP2, the embeddings and the linear path frozen, on the prediction loss plus the
            maximum mean discrepancy of the basal latent between covariate categories within
            cell-state clusters, so the basal latent (:meth:`get_latent_representation`) stops
            carrying the time point and batch but keeps the cell states
            (:func:`crossmodalnet.train.disentangle_encoder`; docs page *Interpretability*).
            ``None`` takes the preset's value (25 for ``"default"``, 0 for ``"paper"``); 0 switches
            it off.
        disentangle_tolerance
            The new encoder is kept only if validation per-protein Pearson drops by at most this
            much; otherwise the encoder before the phase is restored, with a warning. ``None`` takes the
            preset's value: 0.01, or 0.002 with the ``"default"`` preset on a large reference (at least
            20,000 registered cells, whose validation cells measure a smaller loss). The outcome
            is in ``model.split_["disentangle"]``. A continued call (see Notes) that keeps the
            weights it started from skips the phase; one that keeps a new epoch can end up to this
            much below the validation Pearson it started from.
        disentangle_kwargs
            Keyword arguments of :func:`crossmodalnet.train.disentangle_encoder` (``objective``:
            ``"mmd"`` or ``"confusion"``, ``weight``, ``discriminator_steps``, ``n_clusters``: 10
            cell-state clusters by default, 0 for the unconditional MMD, ``min_cells``, ``clustering``:
            ``"kmeans"`` or ``"harmony"`` (clusters from Harmony-corrected components),
            ``state_weight``: > 0 adds a term that keeps the input's cell-state geometry in the basal
            latent, ``state_components``, ``state_fit``: ``"ratio"``, the default, or ``"interval"``, how
            the term compares distances, ``max_steps``: at most this many encoder steps in all,
            ``None`` for whole epochs); its learning rates default to the training plan's. The
            preset's settings (``"default"``: ``{"state_weight": 10, "max_steps": 800}``, so the phase
            is 25 epochs or 800 steps, whichever is fewer: 25 epochs up to about 8,000 training cells at
            ``batch_size=256``) are updated by the given ones; asking for ``n_clusters=0`` or ``objective="confusion"`` without a ``state_weight`` drops the
            preset's term, and ``{"state_weight": 0}`` is the phase without it.
        plan_kwargs
            Keyword arguments of ``crossmodalnet.train.FaderGradNormPlan``, which holds the
            default of every training-plan setting above (``None`` there: the plan's default).
            The explicit arguments above win over the same keys here.
        datasplitter_kwargs
            Keyword arguments of :class:`scvi.dataloaders.DataSplitter`. ``external_indexing``
            (``[train, validation, test]`` or ``[train, validation]`` integer positions of the
            registered cells; disjoint, in range, training cells not empty) trains on exactly that
            split instead of drawing one (``split`` and the sizes are then unused).
        **trainer_kwargs
            Passed to :class:`scvi.train.Trainer` (a Lightning trainer). ``enable_progress_bar`` defaults
            to whether ``sys.stdout`` is a terminal or a Jupyter kernel: scvi-tools draws its bar there with
            carriage returns, which would otherwise end up in redirected or captured output.

        Notes
        -----
        A second call continues from the current weights on the split of the first call, and keeps
        them unless a new epoch beats their validation Pearson (docs page *Using a model in practice*).
        """
        train_defaults = train_settings(getattr(self, "preset", "paper"), self.summary_stats["n_cells"])
        max_epochs = train_defaults["max_epochs"] if max_epochs is None else max_epochs
        if early_stopping_patience is None:
            early_stopping_patience = train_defaults["early_stopping_patience"]
        if early_stopping_min_delta is None:
            early_stopping_min_delta = train_defaults["early_stopping_min_delta"]
        ema_decay = train_defaults["ema_decay"] if ema_decay is None else ema_decay
        if not (is_nonnegative_number(ema_decay) and ema_decay < 1):
            raise ValueError(f"`ema_decay` must be a number in [0, 1) (0: no weight averaging), got {ema_decay!r}.")
        if not is_nonnegative_number(early_stopping_min_delta):
            raise ValueError(
                f"`early_stopping_min_delta` must be a finite number >= 0 (a gain in validation Pearson r), "
                f"got {early_stopping_min_delta!r}."
            )
        disentangle_kwargs = resolve_disentangle_kwargs(train_defaults["disentangle_kwargs"], disentangle_kwargs)
        disentangle_epochs, disentangle_tolerance = check_disentangle_settings(
            train_defaults["disentangle_epochs"] if disentangle_epochs is None else disentangle_epochs,
            train_defaults["disentangle_tolerance"] if disentangle_tolerance is None else disentangle_tolerance,
            disentangle_kwargs,
        )
        if early_stopping_monitor not in MONITORS:
            raise ValueError(f"`early_stopping_monitor` must be one of {MONITORS}, got {early_stopping_monitor!r}.")
        if self.adata_manager is None:
            raise ValueError(
                "This model was loaded without data. Load it with the training MuData "
                "(`CrossmodalNet.load(dir_path, mdata)`) to continue training."
            )
        self._check_registered_data("CrossmodalNet.train")
        if is_dask_array(self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)):
            raise ValueError(
                "CrossmodalNet.train: the registered RNA matrix is a dask array (e.g. from "
                "`anndata.experimental.read_lazy`); training reads a matrix on disk through anndata's backed "
                "datasets instead. Open the file with `mudata.read_h5mu(path, backed='r')` or "
                "`anndata.read_h5ad(path, backed='r')`, or a zarr store's sparse matrix with "
                "`anndata.io.sparse_dataset(zarr.open(path)['X'])` as the modality's `.X`."
            )
        datasplitter_kwargs = dict(datasplitter_kwargs or {})
        clash = sorted(set(datasplitter_kwargs) & set(_SPLITTER_ARGS))
        if clash:
            raise ValueError(f"{clash} are arguments of `train()`; pass them there, not in `datasplitter_kwargs`.")
        explicit = {
            "lr": lr,
            "weight_decay": weight_decay,
            "lr_discriminator": lr_discriminator,
            "weight_decay_discriminator": weight_decay_discriminator,
            "learning_step": learning_step,
            "gradient_penalty": gradient_penalty,
            "lr_gradnorm": lr_gradnorm,
            "gradnorm_alpha": gradnorm_alpha,
            "input_group_lasso": input_group_lasso,
            "reduce_lr_on_plateau": reduce_lr_on_plateau,
        }
        plan_kwargs = {**(plan_kwargs or {}), **{k: v for k, v in explicit.items() if v is not None}}
        plan_kwargs.setdefault("reduce_lr_on_plateau", train_defaults["reduce_lr_on_plateau"])
        plan_kwargs.setdefault("lr_scheduler_metric", early_stopping_monitor)
        # built first: the plan checks its settings before anything changes on the model
        plan = self._training_plan_cls(self.module, **plan_kwargs)
        # mini-batch order and dropout, the split and the fits on the training cells follow `cmn.settings.seed`
        given_seed = _apply_seed()
        if split_seed is not None:
            seed = split_seed
        elif given_seed is not None:
            seed = given_seed
        else:
            seed = settings.seed if settings.seed is not None else 0
        (train_idx, val_idx, test_idx), continued = self._resolve_split(
            split, holdout_time, train_size, validation_size, seed, datasplitter_kwargs.pop("external_indexing", None)
        )
        # names of the cells the weights were fitted or selected on, so metrics can leave them out later
        self.training_cells_ = np.asarray(self.adata.obs_names[np.sort(np.r_[train_idx, val_idx])], dtype=str)
        codes = self.adata_manager.get_from_registry(REGISTRY_KEYS.TIME_KEY).reshape(-1)
        self.trained_time_codes_ = np.unique(codes[train_idx]).astype(np.int64)
        self._fit_on_training_cells(train_idx, val_idx, seed=seed)
        data_splitter = self._data_splitter_cls(
            self.adata_manager,
            external_indexing=[train_idx, val_idx, test_idx],
            batch_size=batch_size,
            load_sparse_tensor=sparse_batches,
            distributed_sampler=use_distributed_sampler(trainer_kwargs.get("strategy")),
            **datasplitter_kwargs,
        )
        callbacks, restore = self._training_callbacks(
            val_idx,
            continued=continued,
            early_stopping=early_stopping,
            patience=early_stopping_patience,
            min_delta=float(early_stopping_min_delta),
            monitor=early_stopping_monitor,
            ema_decay=float(ema_decay),
            trainer_kwargs=trainer_kwargs,
        )
        n_batches = int(np.ceil(train_idx.size / batch_size))
        # no Lightning warning that an epoch has fewer batches than its logging interval
        trainer_kwargs.setdefault("log_every_n_steps", max(1, min(50, n_batches)))
        # scvi-tools' bar redraws itself on stdout with carriage returns: only where that shows as one line
        trainer_kwargs.setdefault("enable_progress_bar", stdout_is_interactive())
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
        self._log_training(runner.trainer.current_epoch, max_epochs, restore, early_stopping_monitor)
        # a continued call that kept the weights it started from keeps their (already disentangled) encoder too
        if not (continued and restore.best_epoch == -1):
            self._disentangle(
                train_idx,
                val_idx,
                epochs=disentangle_epochs,
                tolerance=disentangle_tolerance,
                plan=plan,
                batch_size=batch_size,
                sparse_batches=sparse_batches,
                disentangle_kwargs=disentangle_kwargs,
            )
        self.module.eval()

    # --- getters ---------------------------------------------------------------------------------
    @docs.dedent
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
        %(query_mdata)s
        time
            Predict every cell at this time point instead of its own (counterfactual time). A
            numeric value between two trained time points uses the linear interpolation of their
            embeddings; a held-out time point of the registered data is interpolated the same way.
        batch
            Predict every cell as this batch category instead of its own. Cells whose own category
            was not seen in training (a new donor), or that have no batch column, get the average of
            the trained batch embeddings, with a warning.
        %(forward_batch_size)s
        %(allow_extrapolation)s
        interpolation
            How an unseen time point between two trained ones is predicted. ``"embedding"`` (the
            paper's §4.2): decode ``z`` plus the linearly interpolated time embedding.
            ``"prediction"``: decode at both neighbouring time points and interpolate the two
            predictions with the same weights. An interpolated embedding has a smaller norm than
            the trained ones, which the decoder never saw (docs page *Development notes*).
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
        get NaN rows. When the RNA matrix is a :class:`dask.array.Array` (e.g. from
        :func:`anndata.experimental.read_elem_lazy`), a lazy float32 :class:`dask.array.Array` of cells ×
        proteins instead (columns in the order of :attr:`protein_names`), computed block by block with
        :func:`dask.array.map_blocks` on whatever scheduler is active, e.g. a ``dask.distributed`` cluster
        (docs page *Past one machine*); ``batch_size`` is then the row chunking of the matrix. With ``return_uncertainty=True``, a
        :class:`~crossmodalnet.model.ProteinUncertainty` holding that DataFrame as ``mean`` and
        ``std``, ``lower`` and ``upper`` DataFrames of the same shape.
        """
        # the uncertainty passes read the query many times: a raw-count query is announced once per call
        with announce_once():
            if return_uncertainty:
                if self._rna_is_dask(self._resolve_mdata(mdata)):
                    raise ValueError(
                        "`return_uncertainty=True` is not supported for a dask RNA matrix. Predict without "
                        "uncertainty (a dask array), pass an in-memory or backed (`mudata.read_h5mu(path, "
                        "backed='r')`) MuData, or, for an atlas file, use `cmn.tl.predict_atlas(path, model, "
                        "out=..., uncertainty=True)`, which writes the intervals block by block."
                    )
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
            self._check_if_trained(warn=False)
            mdata = self._resolve_mdata(mdata)
            if self._rna_is_dask(mdata):
                return self._predict_dask(
                    mdata, time=time, batch=batch, allow_extrapolation=allow_extrapolation, interpolation=interpolation
                )
            return self._predict_frame(
                mdata,
                time=time,
                batch=batch,
                batch_size=batch_size,
                allow_extrapolation=allow_extrapolation,
                interpolation=interpolation,
            )

    def _rna_is_dask(self, mdata: MuData) -> bool:
        rna_key = self.get_setup_arg("rna_key")
        if rna_key not in mdata.mod:
            return False
        return is_dask_array(get_layer(mdata.mod[rna_key], self.get_setup_arg("rna_layer"), rna_key))

    @docs.dedent
    @torch.inference_mode()
    def get_latent_representation(self, mdata: MuData | None = None, *, batch_size: int = 1024) -> np.ndarray:
        """Return the basal latent ``z`` of every cell (free of time information by design).

        Parameters
        ----------
        %(query_mdata)s
        %(forward_batch_size)s

        Returns
        -------
        Array of shape (cells, ``n_latent``); cells without RNA get NaN rows.
        """
        self._check_if_trained(warn=False)
        mdata = self._resolve_mdata(mdata)
        X, rows = self._rna_rows(mdata)
        self.module.eval()
        out = np.full((mdata.n_obs, self.module.n_latent), np.nan, dtype=np.float32)
        for pos, x in self._iter_batches(X, rows, batch_size, allow_sparse=self.module.sparse_input):
            out[pos] = self.module.inference(x)["z"].cpu().numpy()
        return out

    def __repr__(self) -> str:
        state = "trained" if self.is_trained_ else "untrained"
        return f"{self._model_summary_string} ({state})"
