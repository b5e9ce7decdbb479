"""The disentangling phase of :meth:`CrossmodalNet.train`, run after best-epoch restoration."""

from __future__ import annotations

import copy
import logging
import warnings
from typing import TYPE_CHECKING

import numpy as np
from scvi.dataloaders import AnnDataLoader

from crossmodalnet._disentangle_settings import (
    DEFAULT_STATE_FIT,
    check_clustering,
    check_conditioning,
    check_max_steps,
    check_state_term,
    resolve_n_clusters,
)
from crossmodalnet._utils import is_nonnegative_number
from crossmodalnet.train import disentangle_encoder

if TYPE_CHECKING:
    from crossmodalnet.train import FaderGradNormPlan

logger = logging.getLogger(__name__)


_KWARGS = (
    "objective",
    "weight",
    "discriminator_steps",
    "lr",
    "weight_decay",
    "lr_discriminator",
    "weight_decay_discriminator",
    "gradient_penalty",
    "n_clusters",
    "min_cells",
    "clustering",
    "state_weight",
    "state_components",
    "state_fit",
    "max_steps",
)


def resolve_disentangle_kwargs(preset: dict, given: dict | None) -> dict:
    """The phase's keyword arguments: the preset's, updated by ``given``.

    The preset's ``state_weight`` needs the conditional MMD, so it is dropped when ``given`` asks for another
    objective or for ``n_clusters=0`` without giving a ``state_weight`` of its own.

    Parameters
    ----------
    preset
        ``disentangle_kwargs`` of the training preset.
    given
        ``disentangle_kwargs`` passed to :meth:`~crossmodalnet.model.CrossmodalNet.train` (``None``: none).

    Returns
    -------
    dict
        The keyword arguments of :func:`~crossmodalnet.train.disentangle_encoder` to use.
    """
    given = dict(given or {})
    kwargs = {**preset, **given}
    unconditional = kwargs.get("objective", "mmd") != "mmd" or kwargs.get("n_clusters") == 0
    if unconditional and "state_weight" not in given:
        kwargs.pop("state_weight", None)
    return kwargs


def check_disentangle_settings(epochs: object, tolerance: object, kwargs: dict | None = None) -> tuple[int, float]:
    """Return ``(epochs, tolerance)`` as ``(int, float)``, or raise a :class:`ValueError` naming the bad one.

    Parameters
    ----------
    epochs
        ``disentangle_epochs``: an integer >= 0.
    tolerance
        ``disentangle_tolerance``: a finite number >= 0.
    kwargs
        ``disentangle_kwargs``: keyword arguments of :func:`~crossmodalnet.train.disentangle_encoder`.

    Returns
    -------
    The checked values.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int | np.integer) or epochs < 0:
        raise ValueError(f"`disentangle_epochs` must be an integer >= 0 (0 switches the phase off), got {epochs!r}.")
    if not is_nonnegative_number(tolerance):
        raise ValueError(f"`disentangle_tolerance` must be a finite number >= 0, got {tolerance!r}.")
    unknown = sorted(set(kwargs or {}) - set(_KWARGS))
    if unknown:
        raise ValueError(f"Unknown `disentangle_kwargs` {unknown}; choose from {list(_KWARGS)}.")
    if (kwargs or {}).get("objective", "mmd") not in ("mmd", "confusion"):
        raise ValueError(
            f"`disentangle_kwargs['objective']` must be 'mmd' or 'confusion', got {kwargs['objective']!r}."
        )
    kwargs = kwargs or {}
    check_max_steps(kwargs.get("max_steps"), "disentangle_kwargs['max_steps']")
    objective = kwargs.get("objective", "mmd")
    check_conditioning(objective, kwargs.get("n_clusters"), kwargs.get("min_cells", 3))
    n_clusters = resolve_n_clusters(objective, kwargs.get("n_clusters"))
    check_clustering(kwargs.get("clustering", "kmeans"), n_clusters)
    check_state_term(
        objective,
        n_clusters,
        kwargs.get("state_weight", 0.0),
        kwargs.get("state_components", 10),
        kwargs.get("state_fit", DEFAULT_STATE_FIT),
    )
    return int(epochs), float(tolerance)


class DisentangleMixin:
    """Train the encoder alone against the discriminators after the prediction training (:meth:`train`)."""

    def _disentangle(
        self,
        train_idx: np.ndarray,
        val_idx: np.ndarray,
        *,
        epochs: int,
        tolerance: float,
        plan: FaderGradNormPlan,
        batch_size: int,
        sparse_batches: bool,
        disentangle_kwargs: dict | None = None,
    ) -> None:
        """Run :func:`~crossmodalnet.train.disentangle_encoder` and keep its encoder only if validation per-protein r holds.

        The outcome is recorded in ``split_["disentangle"]``: the epochs run, the discriminators'
        disentangling term per epoch, the validation per-protein Pearson before and after, and whether
        the new encoder was kept (``"accepted"``).
        """
        module = self.module
        if epochs == 0 or not module.adversarial_covariates:
            self.split_.pop("disentangle", None)
            return
        monitor = "pearson_protein_validation"
        has_val = np.asarray(val_idx).size > 0
        before = self._validation_score(val_idx, monitor) if has_val else float("nan")
        state = copy.deepcopy(module.state_dict())
        loader = AnnDataLoader(
            self.adata_manager,
            indices=np.asarray(train_idx),
            batch_size=batch_size,
            shuffle=True,
            load_sparse_tensor=sparse_batches,
        )
        settings = {
            "lr": plan.lr,
            "weight_decay": plan.weight_decay,
            "lr_discriminator": plan.lr_discriminator,
            "weight_decay_discriminator": plan.weight_decay_discriminator,
            "gradient_penalty": plan.gradient_penalty,
            "input_group_lasso": plan.input_group_lasso,
            **(disentangle_kwargs or {}),
        }
        record: dict = {}
        term = disentangle_encoder(module, loader, epochs=epochs, record=record, **settings)
        after = self._validation_score(val_idx, monitor) if has_val else float("nan")
        accepted = not has_val or not (after < before - tolerance)
        if not accepted:
            module.load_state_dict(state)
            warnings.warn(
                f"The disentangling phase lowered validation per-protein Pearson from {before:.3f} to {after:.3f} "
                f"(more than `disentangle_tolerance={tolerance}`); the encoder before it was kept. "
                "`model.split_['disentangle']` has the details.",
                UserWarning,
                stacklevel=3,
            )
        self.split_["disentangle"] = {
            "epochs": int(epochs),
            "max_steps": settings.get("max_steps"),
            "steps": int(record.get("steps", 0)),
            "objective": settings.get("objective", "mmd"),
            "n_clusters": resolve_n_clusters(settings.get("objective", "mmd"), settings.get("n_clusters")),
            "clustering": settings.get("clustering", "kmeans"),
            "term_per_epoch": [float(a) for a in term],
            "state_weight": float(settings.get("state_weight", 0.0)),
            "state_fit": settings.get("state_fit", DEFAULT_STATE_FIT),
            "state_term_per_epoch": [float(a) for a in record.get("state_term", [])],
            f"{monitor}_before": float(before),
            f"{monitor}_after": float(after),
            "accepted": bool(accepted),
            "tolerance": float(tolerance),
        }
        logger.info(
            "Disentangling phase: %d epoch(s), %d steps, disentangling term %.4g -> %.4g, validation per-protein r "
            "%.3f -> %.3f (%s)",
            len(term),
            int(record.get("steps", 0)),
            term[0],
            term[-1],
            before,
            after,
            "kept" if accepted else "reverted",
        )
