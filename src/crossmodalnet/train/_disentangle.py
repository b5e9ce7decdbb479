"""Disentangling phase: train the encoder alone against the discriminators, the decoder frozen."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.nn import functional as F

from crossmodalnet._constants import REGISTRY_KEYS
from crossmodalnet.nn import confusion_loss, covariate_mmd, discriminator_loss, group_lasso, nlc_loss

if TYPE_CHECKING:
    from collections.abc import Iterable

    from crossmodalnet.module import CrossmodalModule


def disentangle_encoder(
    module: CrossmodalModule,
    batches: Iterable[dict[str, torch.Tensor]],
    *,
    epochs: int,
    objective: str = "mmd",
    weight: float = 1.0,
    discriminator_steps: int = 3,
    lr: float = 1e-3,
    weight_decay: float = 5e-6,
    lr_discriminator: float = 0.0087,
    weight_decay_discriminator: float = 5e-5,
    gradient_penalty: float = 0.4,
    input_group_lasso: float = 0.0,
) -> list[float]:
    r"""Train the encoder (MLP1) alone so the covariates can no longer be read from the basal latent.

    Everything else that makes a prediction (MLP2, the covariate embeddings, the linear path) stays
    frozen, MLP2 in evaluation mode. On every mini-batch the encoder takes one Adam step on

    .. math:: \mathrm{NLC} + \mathrm{MSE} + w \cdot R(z)

    with the predictions decoded by the frozen MLP2, so the encoder keeps what the decoder reads
    while removing the covariates. ``objective`` chooses :math:`R`:

    - ``"mmd"`` (default): :func:`~crossmodalnet.train.covariate_mmd` of each adversarial covariate; no
      discriminator is involved.
    - ``"confusion"``: :func:`~crossmodalnet.train.confusion_loss` of the discriminators, which first
      take ``discriminator_steps`` steps on the mini-batch (:func:`~crossmodalnet.train.discriminator_loss`).

    Parameters
    ----------
    module
        A trained ``CrossmodalModule`` (``model.module``) with at least one adversarial
        covariate; changed in place.
    batches
        Re-iterable source of training mini-batches (registry tensors), e.g. a data loader.
    epochs
        Passes over ``batches``.
    objective
        ``"mmd"`` or ``"confusion"`` (see above).
    weight
        Weight :math:`w` of the disentangling term.
    discriminator_steps
        With ``"confusion"``: discriminator updates per mini-batch, before each encoder update.
    lr, weight_decay
        Adam settings of the encoder.
    lr_discriminator, weight_decay_discriminator, gradient_penalty
        With ``"confusion"``: Adam settings and gradient penalty of the discriminators.
    input_group_lasso
        Weight of the group-lasso penalty on MLP1's first layer (:func:`~crossmodalnet.train.group_lasso`),
        as in training, added to the loss.

    Returns
    -------
    list[float]
        Mean of the disentangling term :math:`R(z)` over the mini-batches of each epoch.
    """
    if objective not in ("mmd", "confusion"):
        raise ValueError(f"`objective` must be 'mmd' or 'confusion', got {objective!r}.")
    if epochs < 0 or int(epochs) != epochs:
        raise ValueError(f"`epochs` must be an integer >= 0, got {epochs!r}.")
    if discriminator_steps < 1 or int(discriminator_steps) != discriminator_steps:
        raise ValueError(f"`discriminator_steps` must be an integer >= 1, got {discriminator_steps!r}.")
    adv = module.adversarial_covariates
    if not adv or epochs == 0:
        return []
    frozen = [*module.decoder.parameters(), *module.covariate_embeddings.parameters()]
    requires = [p.requires_grad for p in frozen]
    for p in frozen:
        p.requires_grad_(requires_grad=False)
    device = next(module.parameters()).device
    opt_enc = torch.optim.Adam(module.encoder.parameters(), lr=lr, weight_decay=weight_decay)
    opt_dis = torch.optim.Adam(
        module.discriminators.parameters(), lr=lr_discriminator, weight_decay=weight_decay_discriminator
    )
    history: list[float] = []
    was_training = module.training
    try:
        module.train()
        module.decoder.eval()
        for _ in range(int(epochs)):
            total, n_batches = 0.0, 0
            for batch in batches:
                batch = {k: v.to(device) for k, v in batch.items()}
                codes = module.covariate_codes(batch)
                x = batch[REGISTRY_KEYS.X_KEY]
                if objective == "confusion":
                    for _ in range(int(discriminator_steps)):
                        with torch.no_grad():
                            z = module.inference(x)["z"]
                        z = z.detach().requires_grad_(gradient_penalty > 0)
                        logits = [module.discriminators[i](z) for i in adv]
                        loss, _ = discriminator_loss(
                            logits, [codes[i] for i in adv], z, gradient_penalty=gradient_penalty
                        )
                        opt_dis.zero_grad(set_to_none=True)
                        loss.backward()
                        opt_dis.step()
                z = module.inference(x)["z"]
                pred = module.generative(**module._get_generative_input(batch, {"z": z}))["protein_scaled"]
                target = module.scale_protein(module.protein_from_tensors(batch))
                if objective == "mmd":
                    term = sum(covariate_mmd(z, codes[i]) for i in adv)
                else:
                    term = confusion_loss([module.discriminators[i](z) for i in adv])
                loss = nlc_loss(pred, target) + F.mse_loss(pred, target) + weight * term
                if input_group_lasso > 0:
                    loss = loss + input_group_lasso * group_lasso(module.encoder.first_layer.weight)
                opt_enc.zero_grad(set_to_none=True)
                opt_dis.zero_grad(set_to_none=True)
                loss.backward()
                opt_enc.step()
                total += float(term.detach())
                n_batches += 1
            history.append(total / max(n_batches, 1))
    finally:
        for p, r in zip(frozen, requires, strict=True):
            p.requires_grad_(r)
        module.train(was_training)
        opt_dis.zero_grad(set_to_none=True)
    return history
