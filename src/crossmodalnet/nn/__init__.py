from ._losses import (
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

__all__ = [
    "adversarial_cross_entropy",
    "confusion_loss",
    "covariate_mmd",
    "discriminator_loss",
    "fader_loss",
    "group_lasso",
    "masked_mse",
    "measured_entries",
    "nlc_loss",
    "pearson_per_row",
]
