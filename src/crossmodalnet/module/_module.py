"""The CrossmodalNet torch module: encoder, time embedding, decoder and discriminators."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn

from crossmodalnet._constants import REGISTRY_KEYS
from crossmodalnet.nn import adversarial_cross_entropy, fader_loss, nlc_loss

from ._components import Decoder, Discriminator, Encoder

GENE_SUBSET_REDUCTIONS = ("hvg", "screen")
"""Input reductions that keep a subset of the genes (buffer ``input_index``)."""

if TYPE_CHECKING:
    from collections.abc import Sequence


def _after_state_dict_load(module: CrossmodalModule, incompatible_keys) -> None:
    """Post-load hook (a module-level function, so the module still pickles, e.g. for DDP spawn)."""
    module._update_linear_genes()


class CrossmodalModule(BaseModuleClass):
    """Fader-network module of CrossmodalNet :cite:p:`Yang2023`.

    MLP1 encodes genes into a basal latent ``z``; one learnable embedding per covariate
    (the time point first, then an optional batch) is added to ``z``; MLP2 decodes the sum into
    proteins. One discriminator per covariate predicts that covariate from ``z``; the
    encoder is trained against them so ``z`` carries no time (or batch) information. The
    discriminators are registered submodules so they are saved and restored with the module.

    Parameters
    ----------
    n_input
        Number of genes.
    n_output
        Number of proteins.
    n_cats_per_cov
        Number of categories of each covariate, time first.
    n_latent
        Latent dimension ``d``.
    dropout_rate
        Dropout in MLP1.
    use_batch_norm
        Batch normalisation in the MLP blocks.
    n_hidden_discriminator
        Hidden units of each discriminator.
    lambda_dis
        Weight of the adversarial term in the Fader loss.
    standardize_input
        Centre and scale each gene with statistics fitted on the training cells
        (:meth:`fit_input_scaling`) before MLP1. The statistics are buffers, saved with the module.
    input_reduction
        Optional fixed reduction of the genes before MLP1, fitted on the training cells
        (:meth:`fit_input_reduction`) and saved as a buffer: ``"hvg"`` and ``"screen"`` keep
        ``n_input_features`` genes (chosen by variance or by correlation with the proteins), ``"svd"`` projects onto ``n_input_features`` truncated-SVD components. ``None``
        (default) feeds all genes, as in the paper.
    n_input_features
        Number of features after ``input_reduction``.
    standardize_protein
        Train on proteins centred and scaled with statistics fitted on the training cells
        (:meth:`fit_protein_scaling`): the losses are computed on that scale, so every protein
        weighs the same in the MSE; predictions are returned on the original scale.
    linear_path
        Add a linear map from genes to proteins beside the networks ("wide and deep"): the
        prediction is ``x W + b[t] + MLP2(z + T[t])`` on the loss scale. ``W`` and the per-time
        intercepts ``b`` are buffers set in closed form by :meth:`fit_linear_path` (ridge regression
        on the training cells); the last layer of MLP2 starts at zero, so training starts exactly
        at the ridge solution and the networks learn the residual.
    sparse_input
        Feed sparse CSR batches straight to the first layer at inference (prediction, basal
        embedding) instead of densifying them. Not a saved setting; training densifies each mini-batch
        unless ``train(sparse_batches=True)``.
    """

    def __init__(
        self,
        n_input: int,
        n_output: int,
        n_cats_per_cov: Sequence[int],
        *,
        n_latent: int = 512,
        dropout_rate: float = 0.05,
        use_batch_norm: bool = True,
        n_hidden_discriminator: int = 128,
        lambda_dis: float = 0.5,
        standardize_input: bool = False,
        input_reduction: Literal["hvg", "screen", "svd"] | None = None,
        n_input_features: int | None = None,
        standardize_protein: bool = False,
        linear_path: bool = False,
        sparse_input: bool = True,
    ):
        super().__init__()
        if input_reduction not in (None, *GENE_SUBSET_REDUCTIONS, "svd"):
            raise ValueError(f"`input_reduction` must be None, 'hvg', 'screen' or 'svd', got {input_reduction!r}.")
        if input_reduction is not None:
            if n_input_features is None or not 0 < n_input_features < n_input:
                raise ValueError(
                    f"`n_input_features` must be between 1 and the number of genes - 1 ({n_input - 1}) with "
                    f"input_reduction={input_reduction!r}, got {n_input_features!r}."
                )
            if standardize_input:
                raise ValueError("Use either `standardize_input` or `input_reduction`, not both.")
        n_features = n_input if input_reduction is None else int(n_input_features)
        self.input_reduction = input_reduction
        self.n_features = n_features
        self.sparse_input = sparse_input
        self.n_input = n_input
        self.n_output = n_output
        self.n_latent = n_latent
        self.n_cats_per_cov = list(n_cats_per_cov)
        self.lambda_dis = lambda_dis
        self.encoder = Encoder(n_features, n_latent, dropout_rate=dropout_rate, use_batch_norm=use_batch_norm)
        self.decoder = Decoder(n_latent, n_output, use_batch_norm=use_batch_norm)
        self.covariate_embeddings = nn.ModuleList(nn.Embedding(n, n_latent) for n in self.n_cats_per_cov)
        # A covariate with a single category has nothing to disentangle: its discriminator is
        # never trained or used (see `adversarial_covariates`).
        self.discriminators = nn.ModuleList(
            Discriminator(n_latent, n, n_hidden=n_hidden_discriminator) for n in self.n_cats_per_cov
        )
        # GradNorm state is part of the module so training can continue after save/load.
        self.loss_weights = nn.Parameter(torch.ones(2))
        self.register_buffer("initial_losses", torch.zeros(2))
        self.standardize_input = standardize_input
        self.register_buffer("input_mean", torch.zeros(n_input))
        self.register_buffer("input_scale", torch.ones(n_input))
        self.register_buffer("input_scaling_fitted", torch.zeros((), dtype=torch.bool))
        # Buffers of the optional input reduction exist only when it is used, so models saved
        # without it keep their state-dict keys.
        if input_reduction in GENE_SUBSET_REDUCTIONS:
            self.register_buffer("input_index", torch.arange(n_features, dtype=torch.long))
        elif input_reduction == "svd":
            self.register_buffer("input_projection", torch.zeros(n_input, n_features))
        if input_reduction is not None:
            self.register_buffer("input_reduction_fitted", torch.zeros((), dtype=torch.bool))
        # Likewise, the protein scaling buffers exist only when it is used.
        self.standardize_protein = standardize_protein
        if standardize_protein:
            self.register_buffer("protein_mean", torch.zeros(n_output))
            self.register_buffer("protein_scale", torch.ones(n_output))
            self.register_buffer("protein_scaling_fitted", torch.zeros((), dtype=torch.bool))
        # Likewise, the linear path's buffers exist only when it is used.
        self.linear_path = linear_path
        if linear_path:
            self.register_buffer("linear_weight", torch.zeros(n_input, n_output))
            self.register_buffer("linear_intercept", torch.zeros(self.n_cats_per_cov[0], n_output))
            self.register_buffer("linear_alpha", torch.zeros(()))
            self.register_buffer("linear_path_fitted", torch.zeros((), dtype=torch.bool))
            # row positions of the genes with a non-zero linear weight, when that is not every gene (derived from
            # the weight, so not saved: set when the path is fitted and after a state dict is loaded)
            self.register_buffer("linear_genes", None, persistent=False)
            self.register_load_state_dict_post_hook(_after_state_dict_load)
            self.decoder.zero_output_layer()

    # --- query batches (scArches-style surgery, :meth:`CrossmodalNet.map_query`) ---------------
    @property
    def n_query_batches(self) -> int:
        """Number of batch categories added by query mapping (rows of ``query_batch_embedding``)."""
        emb = getattr(self, "query_batch_embedding", None)
        return 0 if emb is None else int(emb.shape[0])

    def add_query_batches(self, init: torch.Tensor) -> None:
        """Add one batch embedding row per query category (rows ``init``, categories × d) as a new parameter.

        The reference's own batch embedding (``covariate_embeddings[1]``) and its discriminator keep
        their shapes, so every tensor of the reference's state dict is kept as it is; the query rows are
        the one new entry, ``query_batch_embedding``. They are used only in prediction (the batch table
        of :meth:`batch_table`).
        """
        init = torch.as_tensor(init, dtype=self.covariate_embeddings[1].weight.dtype)
        if init.ndim != 2 or init.shape[1] != self.n_latent or init.shape[0] < 1:
            raise ValueError(
                f"Expected query batch embeddings of shape (n ≥ 1, {self.n_latent}), got {tuple(init.shape)}."
            )
        if self.n_query_batches:
            raise ValueError("This module already has query batch embeddings; map a query onto the reference model.")
        device = self.covariate_embeddings[1].weight.device
        self.query_batch_embedding = nn.Parameter(init.detach().clone().to(device))

    def batch_table(self) -> torch.Tensor:
        """Batch embeddings used in prediction: trained rows, their average (unseen batches), then query rows."""
        table = self.covariate_embeddings[1].weight.detach()
        parts = [table, table.mean(dim=0, keepdim=True)]
        if self.n_query_batches:
            parts.append(self.query_batch_embedding.detach())
        return torch.cat(parts)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # noqa: FBT001, FBT002 (torch's signature)
        """Load a state dict; one with ``query_batch_embedding`` (a mapped query) first gets that parameter."""
        # a saved query model (map_query) has the query rows: create the parameter they are loaded into
        key = "query_batch_embedding"
        if key in state_dict and not self.n_query_batches:
            self.add_query_batches(torch.zeros_like(state_dict[key]))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @torch.no_grad()
    def fit_input_scaling(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Set the per-gene centring and scaling of the input (genes with ~zero spread are only centred)."""
        self.input_mean.copy_(mean)
        self.input_scale.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))
        self.input_scaling_fitted.fill_(1)

    @torch.no_grad()
    def fit_protein_scaling(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Set the per-protein centring and scaling of the targets (proteins with ~zero spread are only centred)."""
        if not self.standardize_protein:
            raise ValueError("This module does not standardise proteins (`standardize_protein=False`).")
        self.protein_mean.copy_(mean)
        self.protein_scale.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))
        self.protein_scaling_fitted.fill_(1)

    @torch.no_grad()
    def fit_linear_path(self, weight: torch.Tensor, intercept: torch.Tensor, alpha: float) -> None:
        """Set the linear path: genes × proteins ``weight``, time points × proteins ``intercept`` (loss scale)."""
        if not self.linear_path:
            raise ValueError("This module has no linear path (`linear_path=False`).")
        weight = torch.as_tensor(weight, dtype=torch.float32)
        intercept = torch.as_tensor(intercept, dtype=torch.float32)
        if tuple(weight.shape) != tuple(self.linear_weight.shape):
            raise ValueError(f"Expected a linear weight of shape {tuple(self.linear_weight.shape)}.")
        if tuple(intercept.shape) != tuple(self.linear_intercept.shape):
            raise ValueError(f"Expected linear intercepts of shape {tuple(self.linear_intercept.shape)}.")
        self.linear_weight.copy_(weight)
        self.linear_intercept.copy_(intercept)
        self.linear_alpha.fill_(float(alpha))
        self.linear_path_fitted.fill_(1)
        self._update_linear_genes()

    @torch.no_grad()
    def _update_linear_genes(self) -> None:
        rows = self.linear_weight.ne(0).any(dim=1).nonzero().reshape(-1)
        self.linear_genes = None if rows.numel() == self.n_input else rows

    def linear_product(self, x: torch.Tensor) -> torch.Tensor:
        """``x W`` of the linear path: on a dense ``x``, over the genes with a non-zero weight only.

        The linear path often uses a screened subset of the genes (e.g. 2,048 of 20,000): the product
        then reads those columns of ``x`` instead of multiplying all genes by zero rows. The columns
        (``linear_genes``) are set by :meth:`fit_linear_path` and by loading a state dict, the two ways
        the weight is meant to change; a weight written in place otherwise should be followed by
        either.

        Parameters
        ----------
        x
            Registered expression of a mini-batch (cells × genes), dense or sparse CSR, before any
            input scaling or reduction.

        Returns
        -------
        torch.Tensor
            Cells × proteins, on the loss scale (without the time intercepts).
        """
        if x.layout != torch.strided:
            return torch.sparse.mm(x, self.linear_weight)
        if self.linear_genes is None:
            return x @ self.linear_weight
        return x.index_select(1, self.linear_genes) @ self.linear_weight.index_select(0, self.linear_genes)

    def linear_prediction(self, x: torch.Tensor, time_weights: torch.Tensor) -> torch.Tensor:
        """Linear path on the loss scale: ``x W + time_weights @ b`` (zero without a linear path).

        ``x`` is the registered expression (dense or sparse CSR, before any input scaling or
        reduction); ``time_weights`` is cells × time points (one-hot, or interpolation weights).
        """
        if not self.linear_path:
            return torch.zeros(x.shape[0], self.n_output, device=x.device)
        return self.linear_product(x) + time_weights @ self.linear_intercept

    def time_weights_from_tensors(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """One-hot time point of each cell (cells × time points)."""
        codes = tensors[REGISTRY_KEYS.TIME_KEY].reshape(-1).long()
        return nn.functional.one_hot(codes, self.n_cats_per_cov[0]).to(self.linear_intercept.dtype)

    def scale_protein(self, y: torch.Tensor) -> torch.Tensor:
        """Put proteins (cells × proteins, original scale) on the scale the losses are computed on."""
        if not self.standardize_protein:
            return y
        return (y - self.protein_mean) / self.protein_scale

    @torch.no_grad()
    def fit_input_reduction(self, value: torch.Tensor) -> None:
        """Set the input reduction: gene indices (``"hvg"``, ``"screen"``) or a genes × features projection (``"svd"``)."""
        if self.input_reduction in GENE_SUBSET_REDUCTIONS:
            value = torch.as_tensor(value, dtype=torch.long).reshape(-1)
            if value.numel() != self.n_features or not bool(((value >= 0) & (value < self.n_input)).all()):
                raise ValueError(f"Expected {self.n_features} gene indices in [0, {self.n_input}).")
            self.input_index.copy_(value)
        elif self.input_reduction == "svd":
            value = torch.as_tensor(value, dtype=torch.float32)
            if tuple(value.shape) != (self.n_input, self.n_features):
                raise ValueError(f"Expected a projection of shape {(self.n_input, self.n_features)}.")
            self.input_projection.copy_(value)
        else:
            raise ValueError("This module has no input reduction (`input_reduction=None`).")
        self.input_reduction_fitted.fill_(1)

    def scale_input(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the fitted per-gene standardisation (identity if disabled)."""
        if not self.standardize_input:
            return x
        if x.layout != torch.strided:
            x = x.to_dense()
        return (x - self.input_mean) / self.input_scale

    def reduce_input(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the fitted input reduction (identity if none); sparse CSR input stays sparse without one."""
        if self.input_reduction is None:
            return x
        if self.input_reduction == "svd":
            return torch.sparse.mm(x, self.input_projection) if x.layout != torch.strided else x @ self.input_projection
        if x.layout != torch.strided:
            x = x.to_dense()
        return x.index_select(1, self.input_index)

    @property
    def adversarial_covariates(self) -> list[int]:
        """Indices of covariates with more than one category (those that get a discriminator)."""
        return [i for i, n in enumerate(self.n_cats_per_cov) if n > 1]

    def network_parameters(self) -> list[nn.Parameter]:
        """Parameters of MLP1, MLP2 and the covariate embeddings."""
        return [
            *self.encoder.parameters(),
            *self.decoder.parameters(),
            *self.covariate_embeddings.parameters(),
        ]

    # --- scvi-tools module protocol -------------------------------------------------------
    def _get_inference_input(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"x": tensors[REGISTRY_KEYS.X_KEY]}

    def _get_generative_input(
        self, tensors: dict[str, torch.Tensor], inference_outputs: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        out = {"z": inference_outputs["z"], "cov_embedding": self.covariate_embedding_from_tensors(tensors)}
        if self.linear_path:
            out["linear"] = self.linear_from_tensors(tensors)
        return out

    def linear_from_tensors(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Linear path of a mini-batch on the loss scale, or ``None`` without a linear path."""
        if not self.linear_path:
            return None
        return self.linear_prediction(tensors[REGISTRY_KEYS.X_KEY], self.time_weights_from_tensors(tensors))

    @auto_move_data
    def inference(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encode expression (dense, or sparse CSR) into the basal latent ``z``."""
        return {"z": self.encoder(self.reduce_input(self.scale_input(x)))}

    @auto_move_data
    def generative(
        self, z: torch.Tensor, cov_embedding: torch.Tensor, linear: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Decode ``z`` plus the covariate embedding into proteins, plus the linear path if given.

        Returns ``"protein"`` on the original scale and ``"protein_scaled"`` on the scale of the
        losses (the same tensor unless ``standardize_protein``).
        """
        scaled = self.decoder(z + cov_embedding)
        if linear is not None:
            scaled = scaled + linear
        if not self.standardize_protein:
            return {"protein": scaled, "protein_scaled": scaled}
        return {"protein": scaled * self.protein_scale + self.protein_mean, "protein_scaled": scaled}

    def covariate_codes(self, tensors: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Integer codes of each covariate, time first, as 1-d long tensors."""
        codes = [tensors[REGISTRY_KEYS.TIME_KEY]]
        if REGISTRY_KEYS.BATCH_KEY in tensors and len(self.n_cats_per_cov) > 1:
            codes.append(tensors[REGISTRY_KEYS.BATCH_KEY])
        return [c.reshape(-1).long() for c in codes]

    def covariate_embedding_from_tensors(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """Sum of the covariate embeddings of each cell (cells × d)."""
        codes = self.covariate_codes(tensors)
        return sum(emb(c) for emb, c in zip(self.covariate_embeddings, codes, strict=True))

    def protein_from_tensors(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """Observed proteins of a mini-batch on the original scale, dense (a sparse batch is densified).

        NaN where not measured: NaN in the registered matrix, or ``False`` in a registered protein mask.
        """
        y = tensors[REGISTRY_KEYS.PROTEIN_KEY]
        y = y if y.layout == torch.strided else y.to_dense()
        mask = tensors.get(REGISTRY_KEYS.PROTEIN_MASK_KEY)
        if mask is not None:
            mask = mask if mask.layout == torch.strided else mask.to_dense()
            y = torch.where(mask.bool(), y, torch.full_like(y, float("nan")))
        return y

    @property
    def covariate_names(self) -> list[str]:
        """Names of the covariates, in the order of ``n_cats_per_cov``: ``"time"``, then ``"batch"``."""
        return ["time", "batch"][: len(self.n_cats_per_cov)]

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict[str, torch.Tensor],
        generative_outputs: dict[str, torch.Tensor],
    ) -> LossOutput:
        """Compute the per-task terms of one mini-batch, and their sum with the current GradNorm weights.

        This is the one place the generator's objective is computed; the training plan balances the
        terms (:func:`crossmodalnet.train.gradnorm_step`). All terms are on the loss scale
        (standardised proteins if ``standardize_protein``).

        Parameters
        ----------
        tensors
            Mini-batch from the registry.
        inference_outputs
            Output of :meth:`inference` (``"z"``).
        generative_outputs
            Output of :meth:`generative` (``"protein_scaled"``).

        Returns
        -------
        :class:`~scvi.module.base.LossOutput` with ``loss`` = ``w_nlc · NLC + w_fader · Fader`` (weights
        detached), ``reconstruction_loss`` = MSE and ``extra_metrics`` holding the differentiable
        per-task terms ``"nlc"``, ``"fader"`` (MSE − λ · Σ CE), ``"mse"``, ``"discriminator_ce"``
        (summed over the adversarial covariates) and ``"discriminator_ce_<covariate>"`` for each
        adversarial covariate (``time``, ``batch``).
        """
        target = self.scale_protein(self.protein_from_tensors(tensors))
        pred = generative_outputs["protein_scaled"]
        z = inference_outputs["z"]
        codes = self.covariate_codes(tensors)
        adv = self.adversarial_covariates
        nlc = nlc_loss(pred, target)
        ce_per_covariate = adversarial_cross_entropy([self.discriminators[i](z) for i in adv], [codes[i] for i in adv])
        fader, mse, ce = fader_loss(pred, target, disc_ce=ce_per_covariate, lambda_dis=self.lambda_dis)
        w = self.loss_weights.detach()
        names = self.covariate_names
        return LossOutput(
            loss=w[0] * nlc + w[1] * fader,
            reconstruction_loss=mse,
            n_obs_minibatch=pred.shape[0],
            extra_metrics={
                "nlc": nlc,
                "fader": fader,
                "mse": mse,
                "discriminator_ce": ce,
                **{f"discriminator_ce_{names[i]}": term for i, term in zip(adv, ce_per_covariate, strict=True)},
            },
        )
