"""Training callbacks of a model: best-epoch restoration, early stopping and the summary log line."""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any

from scvi.train._callbacks import LoudEarlyStopping

from crossmodalnet.train import AveragedWeights, RestoreBestWeights

from ._presets import EMA_EVERY_N_STEPS

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)


class _EarlyStopping(LoudEarlyStopping):
    """scvi-tools' early stopping, with its reason logged (debug) instead of printed; ``train`` logs a summary."""

    def teardown(self, _trainer, _pl_module, stage: str | None = None) -> None:
        """Log the reason for stopping."""
        if self.early_stopping_reason is not None:
            logger.debug("%s", self.early_stopping_reason.strip())


class TrainingCallbacksMixin:
    """Best-epoch restoration and early stopping of :meth:`train`, and its summary log line."""

    def _training_callbacks(
        self,
        val_idx: np.ndarray,
        *,
        continued: bool,
        early_stopping: bool,
        patience: int,
        min_delta: float,
        monitor: str,
        ema_decay: float,
        trainer_kwargs: dict[str, Any],
    ) -> tuple[list, RestoreBestWeights]:
        """The callbacks of one ``train`` call (after the user's) and its restoration callback.

        Without validation cells, the validation loop is switched off in ``trainer_kwargs`` (Lightning
        refuses an empty validation loader). The weight average (``ema_decay > 0``) comes last: the
        restoration snapshots the averaged weights before the average swaps the trained ones back.
        """
        callbacks = list(trainer_kwargs.pop("callbacks", []))
        restore = RestoreBestWeights(monitor=monitor, mode="max")
        average = [AveragedWeights(ema_decay, every_n_steps=EMA_EVERY_N_STEPS)] if ema_decay > 0 else []
        if val_idx.size == 0:
            trainer_kwargs["limit_val_batches"] = 0
            if early_stopping:
                warnings.warn(
                    "No validation cells: early stopping and best-epoch restoration are off.",
                    UserWarning,
                    stacklevel=3,
                )
            return callbacks + average, restore
        if continued or self.module.linear_path:
            # The current weights compete with every new epoch: continued training never ends below them,
            # and a first training with a linear path never ends below its ridge-only start.
            restore.set_initial(self._validation_score(val_idx, monitor), self.module.state_dict())
        callbacks.append(restore)
        if early_stopping:
            # scvi-tools' own callback, which prints its reason: the summary line of `train` says it instead
            callbacks.append(
                _EarlyStopping(monitor=monitor, min_delta=min_delta, patience=patience, mode="max", warmup_epochs=0)
            )
        return callbacks + average, restore

    def _log_training(self, n_epochs: int, max_epochs: int, restore: RestoreBestWeights, monitor: str) -> None:
        """Record the kept epoch in ``split_`` and log one summary line."""
        if restore.best_epoch is None:
            logger.info("Trained %d epoch(s) (no validation cells)", n_epochs)
            return
        # -1: no epoch of this call beat the weights it started from, which were kept
        self.split_["best_epoch"] = int(restore.best_epoch)
        self.split_["best_" + monitor] = float(restore.best_score)
        logger.info(
            "Trained %d epoch(s)%s; kept the weights of %s (validation %s %.3f)",
            n_epochs,
            " (stopped early)" if n_epochs < max_epochs else "",
            f"epoch {restore.best_epoch + 1}" if restore.best_epoch >= 0 else "the start of this call",
            monitor.replace("_validation", "").replace("_", " "),
            restore.best_score,
        )
