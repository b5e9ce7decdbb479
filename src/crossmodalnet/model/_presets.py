"""Settings of the model presets and the validation metrics training can monitor."""

from __future__ import annotations

from typing import Any

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
    "paper": {"max_epochs": 500, "early_stopping_patience": 10, "disentangle_epochs": 0, "disentangle_kwargs": {}},
    "default": {
        "max_epochs": 500,
        "early_stopping_patience": 10,
        "disentangle_epochs": 25,
        "disentangle_kwargs": {"state_weight": 10.0, "max_steps": 800},
    },
}
"""Training settings that differ between presets (used where :meth:`CrossmodalNet.train` gets ``None``)."""

LINEAR_PATH_GENES = ("all", "screen", "auto")
"""Gene sets the linear path can be fitted on (``CrossmodalNet(linear_path_genes=...)``)."""

MONITORS = ("pearson_cell_validation", "pearson_protein_validation")
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
