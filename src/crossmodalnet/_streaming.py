"""A query's RNA as stored, read block by block into the model's input (no torch import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from crossmodalnet._gene_matching import AlignedRows, align_matrix
from crossmodalnet._utils import NormalizedRows, log_normalize_rows

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class RnaInput:
    """A query's RNA matrix as stored, and how its rows become the model's input when they are read.

    Nothing is copied: normalisation (``target_sum``) and gene matching (``gene_index``) are applied to
    each block of rows as it is read, so a backed or dask matrix is streamed chunk by chunk.
    """

    X: object
    """The matrix as stored: dense, sparse, backed (h5py/zarr, anndata's CSR/CSC datasets) or dask."""
    rows: np.ndarray
    """Row in ``X`` of every cell of the MuData (-1 for cells without RNA)."""
    gene_index: np.ndarray | None = None
    """Column of ``X`` of every model gene (-1: filled with zeros); ``None`` when ``X`` has the model's genes."""
    target_sum: float | None = None
    """log1p library-size normalisation to apply to raw counts (over all of ``X``'s genes, before matching)."""

    def reader(self):
        """``X`` as a row reader that returns normalised rows with the model's genes."""
        X = self.X
        if self.target_sum is not None:
            X = NormalizedRows(X, self.target_sum)
        if self.gene_index is not None:
            X = AlignedRows(X, self.gene_index)
        return X

    def transform(self, block):
        """The model input of a block of rows already read from ``X`` (in memory)."""
        if self.target_sum is not None:
            block = log_normalize_rows(block, self.target_sum)
        if self.gene_index is not None:
            block = align_matrix(block, self.gene_index)
        return block
