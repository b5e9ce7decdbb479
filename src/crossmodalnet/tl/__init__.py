"""Tools: write model outputs (predicted proteins, embeddings, saliency, enrichment) into a MuData."""

from ._atlas import predict_atlas
from ._basal import basal_embedding
from ._enrichment import enrichment
from ._predict import predict_protein
from ._probe import covariate_probe
from ._saliency import saliency
from ._time import time_embedding

__all__ = [
    "basal_embedding",
    "covariate_probe",
    "enrichment",
    "predict_atlas",
    "predict_protein",
    "saliency",
    "time_embedding",
]
