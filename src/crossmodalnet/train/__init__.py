from ._gradnorm import gradnorm_loss, renormalize_weights
from ._losses import discriminator_loss, fader_loss, group_lasso, nlc_loss, pearson_per_row
from ._plan import FaderGradNormPlan, RestoreBestWeights, is_discriminator_step

__all__ = [
    "FaderGradNormPlan",
    "RestoreBestWeights",
    "discriminator_loss",
    "fader_loss",
    "gradnorm_loss",
    "group_lasso",
    "is_discriminator_step",
    "nlc_loss",
    "pearson_per_row",
    "renormalize_weights",
]
