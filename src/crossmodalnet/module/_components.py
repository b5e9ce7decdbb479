"""Pure-torch building blocks of the CrossmodalNet module."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class BatchNorm1d(nn.BatchNorm1d):
    """:class:`torch.nn.BatchNorm1d` that tolerates a training batch of one cell.

    A batch of one has no variance to normalise by; such a batch is normalised with the
    running statistics instead of raising, so a final mini-batch of one cell cannot crash training.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` (cells × features)."""
        if self.training and x.shape[0] == 1:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, training=False, eps=self.eps
            )
        return super().forward(x)


def _linear_block(n_in: int, n_out: int, *, use_batch_norm: bool) -> list[nn.Module]:
    """Linear layer, optionally followed by batch normalisation (the paper's ``C_k``)."""
    layers: list[nn.Module] = [nn.Linear(n_in, n_out)]
    if use_batch_norm:
        layers.append(BatchNorm1d(n_out))
    return layers


class Encoder(nn.Module):
    """MLP1: genes → basal latent ``z`` (``C_d - ReLU - Dropout - C_d``).

    Parameters
    ----------
    n_input
        Number of genes.
    n_latent
        Latent dimension ``d``.
    dropout_rate
        Dropout after the first block.
    use_batch_norm
        Whether the linear blocks carry batch normalisation.
    """

    def __init__(self, n_input: int, n_latent: int, *, dropout_rate: float = 0.05, use_batch_norm: bool = True):
        super().__init__()
        self.layers = nn.Sequential(
            *_linear_block(n_input, n_latent, use_batch_norm=use_batch_norm),
            nn.ReLU(),
            nn.Dropout(dropout_rate),
            *_linear_block(n_latent, n_latent, use_batch_norm=use_batch_norm),
        )

    @property
    def first_layer(self) -> nn.Linear:
        """The first linear layer, whose weight GradNorm balances the task gradients on."""
        return self.layers[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode expression (cells × genes, dense or sparse CSR) into ``z`` (cells × d).

        A sparse CSR batch goes through the first layer as a sparse-dense product, without
        densifying the batch.
        """
        if x.layout == torch.strided:
            return self.layers(x)
        first = self.first_layer
        return self.layers[1:](torch.sparse.mm(x, first.weight.t()) + first.bias)


class Decoder(nn.Module):
    """MLP2: ``z + T[t]`` → proteins (``C_d - ReLU - Linear``; no batch norm on the output)."""

    def __init__(self, n_latent: int, n_output: int, *, use_batch_norm: bool = True):
        super().__init__()
        self.layers = nn.Sequential(
            *_linear_block(n_latent, n_latent, use_batch_norm=use_batch_norm),
            nn.ReLU(),
            nn.Linear(n_latent, n_output),
        )

    @torch.no_grad()
    def zero_output_layer(self) -> None:
        """Set the output layer's weight and bias to zero, so the decoder starts by predicting 0."""
        self.layers[-1].weight.zero_()
        self.layers[-1].bias.zero_()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Decode a latent state (cells × d) into proteins (cells × proteins)."""
        return self.layers(h)


class Discriminator(nn.Module):
    """Classifier predicting a covariate (time point) from the basal latent ``z``."""

    def __init__(self, n_latent: int, n_classes: int, *, n_hidden: int = 128):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(n_latent, n_hidden), nn.ReLU(), nn.Linear(n_hidden, n_classes))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Return class logits (cells × classes)."""
        return self.layers(z)
