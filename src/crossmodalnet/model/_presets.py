"""Settings of the model presets and the validation metrics training can monitor."""

from __future__ import annotations

from typing import Any

from crossmodalnet.train import FaderGradNormPlan

from ._linear import LINEAR_MAX_GRAM_GENES

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
    "linear_path_genes": "all",
    "linear_path_coding_genes": False,
}
PRESETS: dict[str, dict[str, object]] = {
    "paper": _PAPER,
    "default": {
        **_PAPER,
        "standardize_protein": True,
        "linear_path": True,
        "linear_path_genes": "auto",
        "linear_path_coding_genes": True,
    },
}
"""Model settings of each preset: ``"paper"`` is Table S1 of :cite:t:`Yang2023`; ``"default"`` adds the linear path
(its genes chosen on the validation cells, the proteins' coding genes in every screened gene set)."""

TRAIN_PRESETS: dict[str, dict[str, object]] = {
    "paper": {
        "max_epochs": 500,
        "early_stopping_patience": 10,
        "early_stopping_min_delta": 0.0,
        "disentangle_epochs": 0,
        "disentangle_kwargs": {},
        "disentangle_tolerance": 0.01,
        "reduce_lr_on_plateau": False,
        "ema_decay": 0.0,
    },
    "default": {
        "max_epochs": 500,
        "early_stopping_patience": 10,
        "early_stopping_min_delta": 0.0,
        "disentangle_epochs": 25,
        "disentangle_kwargs": {"state_weight": 10.0, "max_steps": 800},
        "disentangle_tolerance": 0.01,
        "reduce_lr_on_plateau": False,
        "ema_decay": 0.0,
    },
}
"""Training settings that differ between presets (used where :meth:`CrossmodalNet.train` gets ``None``)."""

LARGE_REFERENCE_TRAIN: dict[str, object] = {
    "reduce_lr_on_plateau": True,
    "ema_decay": 0.999,
    "disentangle_tolerance": 0.002,
    "early_stopping_min_delta": 0.0005,
}
"""What the ``"default"`` preset's training settings change to on a large reference (:func:`is_large_reference`):
the learning rate is reduced on plateaus, an exponential moving average of the weights (decay 0.999, about 1,000
steps) is validated and kept in their place (on the generated 100,000 × 2,000 reference, +0.0009 to +0.0013 test
per-protein r on three seeds; docs page *Scale*, "Large references"), the disentangling phase is kept only if it costs at most 0.002 of
validation per-protein r (a validation set of 1,000 cells or more measures that; the 0.01 of small sets absorbs
the noise of a few dozen validation cells), and early stopping counts a gain only from 0.0005 of validation r
(on the generated 50,000-cell set, the largest minimum that kept every seed's epoch; without one, a
200,000-cell run did not stop: docs page *Development notes*, "A minimum gain for early stopping")."""

EMA_EVERY_N_STEPS = 4
"""Training steps between two updates of the weight average (``train(ema_decay=...)``), each with the decay of
that many steps: an update after each step cost a 100,000 × 20,000 epoch a fifth of its throughput (0.72× a bare
torch loop instead of 0.93×)."""

LARGE_REFERENCE_CELLS = 20_000
"""Registered cells from which the ``"default"`` preset treats a reference as large: the networks' input is
the supervised screen's 256 genes (with more than :data:`LARGE_REFERENCE_MIN_GENES` genes) and its training
settings are updated by :data:`LARGE_REFERENCE_TRAIN`. Chosen on the generated 50,000-cell set; every benchmark
set up to 10,000 cells is below it (docs page *Scale*, "Large references")."""

LARGE_REFERENCE_MIN_GENES = 1_024
"""Genes a large reference needs before the ``"default"`` preset screens the networks' input to 256 genes."""

WIDE_INPUT_CELLS = 100_000
"""Registered cells from which the ``"default"`` preset's networks read the screen's first
:data:`WIDE_INPUT_FEATURES` genes instead of 256 (when the preset chooses the screen itself,
``input_reduction="auto"``, and the reference has at least :data:`WIDE_INPUT_GENES` genes). On the generated
100,000 and 200,000 × 20,000 references, 1,024 screened genes raised test per-protein r on every run, to level
with LightGBM or above; at 50,000 cells, 512 genes already lost to 256 (docs page *Scale*, "Large references")."""

WIDE_INPUT_GENES = 10_000
"""Registered genes a reference of :data:`WIDE_INPUT_CELLS` cells needs before the networks read
:data:`WIDE_INPUT_FEATURES` screened genes. At 100,000 × 2,000, 1,024 of the 2,000 genes lost to 256 on three
seeds (−0.0013 to −0.0015 test per-protein r); at 20,000 genes they gained. Between the two it is unmeasured."""

WIDE_INPUT_FEATURES = 1_024
"""Screened genes the ``"default"`` preset's networks read from :data:`WIDE_INPUT_CELLS` registered cells."""

LARGE_REFERENCE_LINEAR_GENES = 2_048
"""Screened genes that stand in for all genes in the linear path of a large reference, where all genes are out of
reach of its closed form (more than :data:`~crossmodalnet.model._linear.LINEAR_MAX_GRAM_GENES` genes and training
cells); below :data:`LARGE_REFERENCE_CELLS` cells the stand-in is ``LINEAR_MAX_GRAM_GENES`` (4,096) genes. The
gene set's statistics cost ``O(cells · genes²)``: on the generated 100,000 × 20,000 reference, 2,048 screened genes
predicted the validation cells as well as 4,096 (docs page *Scale*, "Large references") in a quarter of the time."""


def is_large_reference(preset: str, n_cells: int) -> bool:
    """Whether the preset uses its large-reference settings for a reference of ``n_cells`` registered cells.

    Parameters
    ----------
    preset
        Name of a preset in :data:`PRESETS`.
    n_cells
        Cells of the registered MuData.

    Returns
    -------
    ``True`` for the ``"default"`` preset with at least :data:`LARGE_REFERENCE_CELLS` cells.
    """
    return preset == "default" and int(n_cells) >= LARGE_REFERENCE_CELLS


def train_settings(preset: str, n_cells: int) -> dict[str, object]:
    """The preset's training settings for a reference of ``n_cells`` registered cells.

    Parameters
    ----------
    preset
        Name of a preset in :data:`TRAIN_PRESETS`.
    n_cells
        Cells of the registered MuData.

    Returns
    -------
    :data:`TRAIN_PRESETS` ``[preset]``, updated by :data:`LARGE_REFERENCE_TRAIN` on a large reference.
    """
    return {**TRAIN_PRESETS[preset], **(LARGE_REFERENCE_TRAIN if is_large_reference(preset, n_cells) else {})}


def resolve_input_reduction(preset: str, input_reduction: str | None, n_cells: int, n_genes: int) -> str | None:
    """The networks' input reduction: ``input_reduction`` itself unless it is ``"auto"``.

    Parameters
    ----------
    preset
        Name of a preset in :data:`PRESETS`.
    input_reduction
        ``"auto"``, ``None``, ``"hvg"``, ``"screen"`` or ``"svd"``.
    n_cells, n_genes
        Cells and genes of the registered MuData.

    Returns
    -------
    For ``"auto"``: ``"screen"`` for a large reference (:func:`is_large_reference`) with more than
    :data:`LARGE_REFERENCE_MIN_GENES` genes, otherwise ``None`` (all genes, as in the paper).
    """
    if input_reduction != "auto":
        return input_reduction
    return "screen" if is_large_reference(preset, n_cells) and n_genes > LARGE_REFERENCE_MIN_GENES else None


def default_input_features(
    preset: str, input_reduction: str | None, n_cells: int, n_genes: int, *, auto: bool
) -> int | None:
    """How many features the networks' input reduction keeps when ``n_input_features`` is not given.

    Parameters
    ----------
    preset
        The model's preset.
    input_reduction
        The resolved input reduction (:func:`resolve_input_reduction`).
    n_cells
        Registered cells.
    n_genes
        Registered genes.
    auto
        Whether the preset chose the reduction (``input_reduction="auto"``).

    Returns
    -------
    :data:`WIDE_INPUT_FEATURES` when the ``"default"`` preset chose the screen for a reference of at least
    :data:`WIDE_INPUT_CELLS` cells and :data:`WIDE_INPUT_GENES` genes; otherwise :data:`N_INPUT_FEATURES` of the
    reduction (``None`` without one).
    """
    wide = n_cells >= WIDE_INPUT_CELLS and n_genes >= WIDE_INPUT_GENES
    if auto and input_reduction == "screen" and is_large_reference(preset, n_cells) and wide:
        return WIDE_INPUT_FEATURES
    return N_INPUT_FEATURES.get(input_reduction) if input_reduction is not None else None


def linear_standin_genes(preset: str, n_cells: int, limit: int = LINEAR_MAX_GRAM_GENES) -> int:
    """How many of the screen's genes stand in for all genes in the linear path when all are out of its reach.

    Parameters
    ----------
    preset
        The model's preset.
    n_cells
        Registered cells.
    limit
        Most genes the closed form takes (:data:`~crossmodalnet.model._linear.LINEAR_MAX_GRAM_GENES`).

    Returns
    -------
    :data:`LARGE_REFERENCE_LINEAR_GENES` (at most ``limit``) on a large reference (:func:`is_large_reference`),
    otherwise ``limit``.
    """
    return min(LARGE_REFERENCE_LINEAR_GENES, limit) if is_large_reference(preset, n_cells) else limit


LINEAR_PATH_GENES = ("all", "screen", "auto")
"""Gene sets the linear path can be fitted on (``CrossmodalNet(linear_path_genes=...)``)."""

MONITORS = FaderGradNormPlan.validation_metrics
"""Validation metrics that early stopping and best-epoch restoration can follow."""

N_INPUT_FEATURES = {"hvg": 2000, "screen": 256, "svd": 256}
"""Default number of features kept by each ``input_reduction``."""


def resolve_preset(preset: str, given: dict[str, Any]) -> dict[str, Any]:
    """Model settings: each ``None`` in ``given`` replaced by the preset's value.

    Parameters
    ----------
    preset
        Name of a preset in :data:`PRESETS`.
    given
        Settings passed by the user, ``None`` where not given.

    Returns
    -------
    The resolved settings, with the same keys as ``given``.
    """
    if preset not in PRESETS:
        raise ValueError(f"`preset` must be one of {list(PRESETS)}, got {preset!r}.")
    return {k: (PRESETS[preset][k] if v is None else v) for k, v in given.items()}
