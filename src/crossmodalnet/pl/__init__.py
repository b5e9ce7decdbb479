"""Plotting: read the keys written by :mod:`crossmodalnet.tl` and draw them (matplotlib)."""

from ._calibration import calibration
from ._enrichment import enrichment
from ._gene_rank import gene_rank
from ._predicted_vs_observed import predicted_vs_observed
from ._saliency_ranking import saliency_ranking
from ._time_embedding import time_embedding
from ._training_history import training_history

__all__ = [
    "calibration",
    "enrichment",
    "gene_rank",
    "predicted_vs_observed",
    "saliency_ranking",
    "time_embedding",
    "training_history",
]
