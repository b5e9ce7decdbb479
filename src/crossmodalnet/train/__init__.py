from crossmodalnet.nn import (
    adversarial_cross_entropy,
    confusion_loss,
    covariate_mmd,
    discriminator_loss,
    fader_loss,
    group_lasso,
    masked_mse,
    measured_entries,
    nlc_loss,
    pearson_per_row,
)

from ._disentangle import disentangle_encoder
from ._gradnorm import GradNormStep, gradnorm_loss, gradnorm_step, renormalize_weights
from ._plan import AveragedWeights, FaderGradNormPlan, RestoreBestWeights, is_discriminator_step

__all__ = [
    "AveragedWeights",
    "FaderGradNormPlan",
    "GradNormStep",
    "RestoreBestWeights",
    "adversarial_cross_entropy",
    "confusion_loss",
    "covariate_mmd",
    "discriminator_loss",
    "disentangle_encoder",
    "fader_loss",
    "gradnorm_loss",
    "gradnorm_step",
    "group_lasso",
    "is_discriminator_step",
    "masked_mse",
    "measured_entries",
    "nlc_loss",
    "pearson_per_row",
    "renormalize_weights",
]
