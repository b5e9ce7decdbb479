"""Lightning training plan: Fader adversarial training balanced by GradNorm (paper Algorithm 1)."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import WeightAveraging
from scvi.train import TrainingPlan
from torch.optim.swa_utils import get_ema_multi_avg_fn

from crossmodalnet._constants import REGISTRY_KEYS
from crossmodalnet._metrics import pearson_per_cell, pearson_per_protein
from crossmodalnet._utils import is_nonnegative_number
from crossmodalnet.nn import discriminator_loss, group_lasso

from ._gradnorm import gradnorm_step, renormalize_weights

if TYPE_CHECKING:
    from collections.abc import Sequence

    from crossmodalnet.module import CrossmodalModule


_VALIDATION_METRICS = ("pearson_cell_validation", "pearson_protein_validation")


def is_discriminator_step(batch_count: int, learning_step: int) -> bool:
    """Whether mini-batch number ``batch_count`` (counted from 1) updates the discriminators.

    As in Algorithm 1 of :cite:t:`Yang2023`, every ``learning_step``-th batch trains the
    discriminators and all other batches train the encoder and decoder.
    """
    return learning_step > 0 and batch_count % learning_step == 0


def check_input_group_lasso(value: float) -> float:
    """Return ``value`` as a float, or raise a :class:`ValueError` unless it is a finite number >= 0."""
    if not is_nonnegative_number(value):
        raise ValueError(f"`input_group_lasso` must be a finite number >= 0, got {value!r}.")
    return float(value)


def check_lr_schedule(
    *, reduce_lr_on_plateau: bool, lr_factor: float, lr_patience: int, lr_min: float, lr_scheduler_metric: str
) -> None:
    """Raise a :class:`ValueError` naming the first invalid setting of the learning-rate schedule."""
    if not isinstance(reduce_lr_on_plateau, bool | np.bool_):
        raise ValueError(f"`reduce_lr_on_plateau` must be True or False, got {reduce_lr_on_plateau!r}.")
    if not (isinstance(lr_factor, int | float) and 0 < lr_factor < 1):
        raise ValueError(f"`lr_factor` must be a number between 0 and 1 (exclusive), got {lr_factor!r}.")
    if isinstance(lr_patience, bool) or not isinstance(lr_patience, int | np.integer) or lr_patience < 0:
        raise ValueError(f"`lr_patience` must be an integer >= 0, got {lr_patience!r}.")
    if not is_nonnegative_number(lr_min):
        raise ValueError(f"`lr_min` must be a finite number >= 0, got {lr_min!r}.")
    if lr_scheduler_metric not in _VALIDATION_METRICS:
        raise ValueError(
            f"`lr_scheduler_metric` must be one of {list(_VALIDATION_METRICS)}, got {lr_scheduler_metric!r}."
        )


class FaderGradNormPlan(TrainingPlan):
    """Manual-optimisation plan alternating discriminator and GradNorm-weighted generator steps.

    A generator step takes the per-task terms from the module's loss
    (:meth:`~crossmodalnet.module.CrossmodalModule.loss`) and balances NLC against the Fader loss with
    :func:`~crossmodalnet.train.gradnorm_step`; the optional group-lasso penalty is added outside GradNorm.
    The defaults are the Table S1 values of :cite:t:`Yang2023`; ``CrossmodalNet.train`` and the
    benchmarks read them from here.

    Parameters
    ----------
    module
        A :class:`~crossmodalnet.module.CrossmodalModule`.
    lr, weight_decay
        Adam settings of MLP1, MLP2 and the covariate embeddings.
    lr_discriminator, weight_decay_discriminator
        Adam settings of the discriminators.
    learning_step
        The discriminators are updated on every ``learning_step``-th mini-batch.
    gradient_penalty
        Weight of the discriminator gradient penalty.
    lr_gradnorm
        Adam learning rate of the GradNorm task weights.
    gradnorm_alpha
        GradNorm restoring force.
    input_group_lasso
        Weight of a group-lasso penalty on MLP1's first layer (see :func:`~crossmodalnet.train.group_lasso`).
        0 (default) is the paper's objective.
    reduce_lr_on_plateau
        Multiply the learning rate of MLP1, MLP2 and the embeddings by ``lr_factor`` whenever
        ``lr_scheduler_metric`` has not improved for more than ``lr_patience`` validation epochs
        (:class:`torch.optim.lr_scheduler.ReduceLROnPlateau`, stepped at the end of each validation
        epoch; the names are those of :class:`scvi.train.TrainingPlan`). The discriminators' and the GradNorm
        weights' learning rates stay fixed. Off by default (the paper's constant learning rate).
    lr_factor, lr_patience, lr_min
        Factor of each reduction, validation epochs without improvement that are tolerated before it, and
        the floor of the learning rate.
    lr_scheduler_metric
        Validation metric the schedule follows (larger is better): ``"pearson_protein_validation"`` or
        ``"pearson_cell_validation"``.
    """

    validation_metrics = _VALIDATION_METRICS
    """Validation metrics logged at the end of each validation epoch (:meth:`validation_scores`)."""

    def __init__(
        self,
        module: CrossmodalModule,
        *,
        lr: float = 1e-3,
        weight_decay: float = 5e-6,
        lr_discriminator: float = 0.0087,
        weight_decay_discriminator: float = 5e-5,
        learning_step: int = 3,
        gradient_penalty: float = 0.4,
        lr_gradnorm: float = 0.01475,
        gradnorm_alpha: float = 0.5,
        input_group_lasso: float = 0.0,
        reduce_lr_on_plateau: bool = False,
        lr_factor: float = 0.3,
        lr_patience: int = 2,
        lr_min: float = 0.0,
        lr_scheduler_metric: str = "pearson_protein_validation",
    ):
        check_lr_schedule(
            reduce_lr_on_plateau=reduce_lr_on_plateau,
            lr_factor=lr_factor,
            lr_patience=lr_patience,
            lr_min=lr_min,
            lr_scheduler_metric=lr_scheduler_metric,
        )
        super().__init__(
            module,
            lr=lr,
            weight_decay=weight_decay,
            eps=1e-8,
            reduce_lr_on_plateau=bool(reduce_lr_on_plateau),
            lr_factor=float(lr_factor),
            lr_patience=int(lr_patience),
            lr_threshold=0.0,
            lr_scheduler_metric=lr_scheduler_metric,
            lr_min=float(lr_min),
        )
        self.lr_scheduler_: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        self.input_group_lasso = check_input_group_lasso(input_group_lasso)
        self.automatic_optimization = False
        self.lr_discriminator = lr_discriminator
        self.weight_decay_discriminator = weight_decay_discriminator
        self.learning_step = learning_step
        self.gradient_penalty = gradient_penalty
        self.lr_gradnorm = lr_gradnorm
        self.gradnorm_alpha = gradnorm_alpha
        self.batch_count = 0
        self._val_pred: list[torch.Tensor] = []
        self._val_true: list[torch.Tensor] = []
        # the training metrics' running Σ value · cells and Σ cells over the epoch (logged once, at its end)
        self._train_sums: dict[str, list] = {}

    # --- optimisers ------------------------------------------------------------------------
    def configure_optimizers(self):
        """Adam for the network, the discriminators and the GradNorm weights."""
        module = self.module
        opt_net = torch.optim.Adam(module.network_parameters(), lr=self.lr, weight_decay=self.weight_decay)
        opt_dis = torch.optim.Adam(
            module.discriminators.parameters(), lr=self.lr_discriminator, weight_decay=self.weight_decay_discriminator
        )
        opt_w = torch.optim.Adam([module.loss_weights], lr=self.lr_gradnorm)
        # Stepped by hand in `on_validation_epoch_end` (manual optimisation): Lightning does not see it.
        self.lr_scheduler_ = (
            torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt_net,
                mode="max",
                factor=self.lr_factor,
                patience=self.lr_patience,
                threshold=self.lr_threshold,
                threshold_mode="abs",
                min_lr=self.lr_min,
            )
            if self.reduce_lr_on_plateau
            else None
        )
        return [opt_net, opt_dis, opt_w]

    # --- distributed data parallel -------------------------------------------------------------
    def _world_size(self) -> int:
        trainer = self._trainer
        return 1 if trainer is None else int(getattr(trainer, "world_size", 1))

    def _mean_across_processes(self, t: torch.Tensor) -> torch.Tensor:
        """Mean of ``t`` across processes under data-parallel training; ``t`` itself on one process."""
        return self.trainer.strategy.reduce(t, reduce_op="mean") if self._world_size() > 1 else t

    def _set_gradients(self, params: list[torch.Tensor], grads: Sequence[torch.Tensor | None]) -> None:
        """Write ``grads`` into ``.grad`` and, under data-parallel training, average them across processes.

        Gradients are computed with :func:`torch.autograd.grad` (GradNorm needs the per-task
        gradients), which bypasses DDP's backward hooks; the average is therefore taken here, with
        one all-reduce of the flattened gradients through the Lightning strategy. On one process a
        parameter without a gradient keeps ``.grad = None`` (the optimiser skips it); across processes
        it counts as zero, so every process takes the same step.
        """
        grads = list(grads)
        if self._world_size() > 1:
            filled = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
            flat = self.trainer.strategy.reduce(torch.cat([g.reshape(-1) for g in filled]), reduce_op="mean")
            grads = [g.view_as(p) for g, p in zip(torch.split(flat, [p.numel() for p in params]), params, strict=True)]
        for p, g in zip(params, grads, strict=True):
            p.grad = g

    # --- steps -----------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Run one discriminator step or one generator step, depending on the batch count."""
        self.batch_count += 1
        adv = self.module.adversarial_covariates
        if adv and is_discriminator_step(self.batch_count, self.learning_step):
            self._discriminator_step(batch, adv)
        else:
            self._generator_step(batch, adv)

    def _discriminator_step(self, batch: dict[str, torch.Tensor], adv: list[int]) -> None:
        _, opt_dis, _ = self.optimizers()
        module = self.module
        with torch.no_grad():
            z = module.inference(batch[REGISTRY_KEYS.X_KEY])["z"]
        z = z.detach().requires_grad_(self.gradient_penalty > 0)
        codes = module.covariate_codes(batch)
        logits = [module.discriminators[i](z) for i in adv]
        loss, ce = discriminator_loss(logits, [codes[i] for i in adv], z, gradient_penalty=self.gradient_penalty)
        opt_dis.zero_grad(set_to_none=True)
        params = list(module.discriminators.parameters())
        self._set_gradients(params, torch.autograd.grad(loss, params, allow_unused=True))
        opt_dis.step()
        acc = torch.stack([(lg.argmax(1) == codes[i]).float().mean() for lg, i in zip(logits, adv, strict=True)]).mean()
        self._accumulate({"discriminator_loss_train": ce, "discriminator_accuracy_train": acc}, z.shape[0])

    def _generator_step(self, batch: dict[str, torch.Tensor], adv: list[int]) -> None:
        opt_net, _, opt_w = self.optimizers()
        module = self.module
        _, _, out = module(batch)
        terms = out.extra_metrics
        # GradNorm balances NLC against the Fader loss; its loss ratios use the positive
        # reconstruction terms (NLC and MSE), as the Fader loss can be negative through its
        # adversarial term.
        params = module.network_parameters()
        shared = module.encoder.first_layer.weight
        w = module.loss_weights
        step = gradnorm_step(
            [terms["nlc"], terms["fader"]],
            params,
            shared,
            w,
            module.initial_losses,
            ratio_losses=[terms["nlc"], terms["mse"]],
            alpha=self.gradnorm_alpha,
            reduce=self._mean_across_processes,
        )
        opt_net.zero_grad(set_to_none=True)
        grads = step.gradients
        penalty = None
        if self.input_group_lasso > 0:
            # The penalty is outside GradNorm: its gradient is added to the balanced first-layer gradient.
            penalty = self.input_group_lasso * group_lasso(shared)
            (g_pen,) = torch.autograd.grad(penalty, shared)
            i_shared = next(i for i, p in enumerate(params) if p is shared)
            grads[i_shared] = grads[i_shared] + g_pen
        self._set_gradients(params, grads)
        opt_w.zero_grad(set_to_none=True)
        self._set_gradients([w], [step.weight_gradient])
        opt_net.step()
        opt_w.step()
        renormalize_weights(w)

        logged = {
            "loss_train": out.loss,
            "nlc_train": terms["nlc"],
            "mse_train": terms["mse"],
            "adversarial_ce_train": terms["discriminator_ce"],
            "gradnorm_loss_train": step.gradnorm_loss,
            "w_nlc": w[0],
            "w_fader": w[1],
            **({} if penalty is None else {"input_group_lasso_train": penalty}),
        }
        self._accumulate(logged, out.n_obs_minibatch)

    def _accumulate(self, values: dict[str, torch.Tensor], n: int) -> None:
        """Add one step's training metrics, weighted by its ``n`` cells, to the epoch's running sums.

        Logged once per epoch by :meth:`on_train_epoch_end` (the cell-weighted epoch mean Lightning's
        ``self.log(..., on_epoch=True, batch_size=n)`` gives, without its bookkeeping at every step).
        """
        for name, value in values.items():
            weighted = value.detach() * n
            if name in self._train_sums:
                self._train_sums[name][0] += weighted
                self._train_sums[name][1] += n
            else:
                self._train_sums[name] = [weighted, n]

    def on_train_epoch_start(self) -> None:
        """Start the epoch's training metrics afresh."""
        self._train_sums.clear()

    def on_validation_epoch_start(self) -> None:
        """Average the batch-norm statistics across processes before validating (see :meth:`on_train_epoch_end`)."""
        self._average_batch_norm_statistics()

    def on_train_epoch_end(self) -> None:
        """Log the epoch's training metrics (means over its cells) and average the batch-norm statistics.

        Under data-parallel training each process logs the mean over its own cells and ``sync_dist``
        averages them, as for the validation metrics.
        """
        sync = self._world_size() > 1
        for name, (total, n) in self._train_sums.items():
            self.log(name, total / n, on_step=False, on_epoch=True, sync_dist=sync)
        self._train_sums.clear()
        self._average_batch_norm_statistics()

    def _average_batch_norm_statistics(self) -> None:
        """Under data-parallel training, average the batch-norm running statistics across processes.

        Each process updates them from its own share of the cells; averaging keeps every replica,
        the validation scores and the saved model identical. Runs before validation and again at the
        end of each epoch (idempotent).
        """
        if self._world_size() <= 1:
            return
        with torch.no_grad():
            for buf in self.module.buffers():
                if buf.is_floating_point():
                    buf.copy_(self.trainer.strategy.reduce(buf.clone(), reduce_op="mean"))

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Log the validation losses and collect predictions for epoch-level Pearson."""
        _, generative, out = self.module(batch)
        n = out.n_obs_minibatch
        sync = self._world_size() > 1
        # Losses on the training scale (standardised proteins if enabled); Pearson on the original scale.
        for name in ("nlc", "mse"):
            value = out.extra_metrics[name]
            self.log(f"{name}_validation", value, on_step=False, on_epoch=True, batch_size=n, sync_dist=sync)
        self._val_pred.append(generative["protein"].detach().cpu())
        self._val_true.append(self.module.protein_from_tensors(batch).detach().cpu())

    @staticmethod
    def validation_scores(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
        """Score the whole validation set: mean per-cell and mean per-protein Pearson.

        Parameters
        ----------
        pred, true
            Predicted and observed proteins on the original scale, validation cells × proteins.

        Returns
        -------
        ``{"pearson_cell_validation": ..., "pearson_protein_validation": ...}``, the metrics logged at
        the end of each validation epoch (early stopping and best-epoch restoration monitor one of them).
        """
        return {
            "pearson_cell_validation": float(np.nanmean(pearson_per_cell(pred, true))),
            "pearson_protein_validation": float(np.nanmean(pearson_per_protein(pred, true))),
        }

    def on_validation_epoch_end(self) -> None:
        """Log the validation scores (:meth:`validation_scores`) over the whole validation set."""
        if not self._val_pred:
            return
        pred = torch.cat(self._val_pred).double().numpy()
        true = torch.cat(self._val_true).double().numpy()
        self._val_pred.clear()
        self._val_true.clear()
        # Under data-parallel training each process scores its own share of the validation cells;
        # sync_dist averages them so every process makes the same early-stopping decision.
        sync = self._world_size() > 1
        scores = self.validation_scores(pred, true)
        for name, value in scores.items():
            self.log(name, torch.tensor(value, device=self.device), sync_dist=sync)
        if self.lr_scheduler_ is not None and not self.trainer.sanity_checking:
            # the same value on every process, so every replica keeps the same learning rate
            metric = self._mean_across_processes(torch.tensor(scores[self.lr_scheduler_metric], device=self.device))
            if torch.isfinite(metric):
                self.lr_scheduler_.step(float(metric))
            self.log("lr", float(self.lr_scheduler_.optimizer.param_groups[0]["lr"]), sync_dist=False)


class AveragedWeights(WeightAveraging):
    """An exponential moving average of the weights, validated in place of them (Lightning's :class:`~lightning.pytorch.callbacks.WeightAveraging`).

    The average is updated after every ``every_n_steps``-th training step, with torch's in-place multi-tensor
    update (:func:`torch.optim.swa_utils.get_ema_multi_avg_fn`) and the decay of that many steps, ``decay **
    every_n_steps``, so it spans the same steps as an update after each step. Validation runs on the averaged
    weights, so early stopping, the learning-rate schedule and :class:`RestoreBestWeights` (listed before this
    callback) judge and keep the average. Unlike Lightning's callback, the trained weights come back at the end of
    the validation loop rather than of its epoch, so the restoration snapshots the average that was validated;
    and at the end of training the average is copied into the model only when nothing was validated (otherwise
    the restoration decides which weights stay).

    Parameters
    ----------
    decay
        Weight of the average per training step: ``average ← decay · average + (1 − decay) · weights``.
    every_n_steps
        Training steps (mini-batches) between updates. An update touches every weight and buffer of the model (2.2 million numbers at
        20,000 genes); after each step it slowed a 100,000 × 20,000 epoch from 0.93× to 0.72× the throughput of a
        bare torch loop.
    """

    def __init__(self, decay: float, every_n_steps: int = 1):
        super().__init__(multi_avg_fn=get_ema_multi_avg_fn(decay**every_n_steps))
        self.decay, self.every_n_steps = decay, int(every_n_steps)
        self.validated = False
        self._steps = 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        """Count the training step (a mini-batch), then update the average if it is due."""
        self._steps += 1
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        """After the first training step and every ``every_n_steps``-th after it, never at an epoch's end.

        Steps are mini-batches: Lightning's ``step_idx`` counts optimiser steps, and the training plan takes one
        to three of them per mini-batch (the networks, the discriminators, the GradNorm weights).
        """
        return step_idx is not None and (self._steps - 1) % self.every_n_steps == 0

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Keep the averaged weights until the validation loop ends."""

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Swap the trained weights back in."""
        if self._average_model is not None:
            self._swap_models(pl_module)
            self.validated = self.validated or not trainer.sanity_checking

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Copy the average into the model when no validation chose the weights."""
        if not self.validated:
            super().on_train_end(trainer, pl_module)


class RestoreBestWeights(pl.Callback):
    """Keep the module weights of the best epoch in memory and restore them when training ends.

    Parameters
    ----------
    monitor
        Logged metric to track.
    mode
        ``"max"`` if larger is better.
    """

    def __init__(self, monitor: str = "pearson_protein_validation", mode: str = "max"):
        super().__init__()
        self.monitor = monitor
        self.mode = mode
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self._best_state: dict[str, torch.Tensor] | None = None

    def set_initial(self, score: float, state: dict[str, torch.Tensor]) -> None:
        """Start from given weights (trained earlier, or a linear path's ridge-only start): kept unless an epoch scores better (``best_epoch`` -1).

        Parameters
        ----------
        score
            The monitored validation metric of ``state``; a non-finite score is ignored.
        state
            Module ``state_dict`` to keep (copied).
        """
        if np.isfinite(score):
            self.best_score = float(score)
            self.best_epoch = -1
            self._best_state = copy.deepcopy(state)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Snapshot the weights if the monitored metric improved."""
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        score = float(trainer.callback_metrics[self.monitor])
        if not np.isfinite(score):
            return
        better = self.best_score is None or (score > self.best_score if self.mode == "max" else score < self.best_score)
        if better:
            self.best_score = score
            self.best_epoch = trainer.current_epoch
            self._best_state = copy.deepcopy(pl_module.module.state_dict())

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Load the best weights back into the module."""
        if self._best_state is not None:
            pl_module.module.load_state_dict(self._best_state)
