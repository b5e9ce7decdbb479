"""scvi-tools' data loading of a registered MuData, with backed (on-disk) matrices read in sorted rows.

scvi-tools' :class:`~scvi.data.AnnTorchDataset` reads a mini-batch of a backed matrix (anndata's
CSR/CSC datasets, h5py datasets) with one sorted read, as HDF5 requires, and returns its rows in that
sorted order. The cells of a mini-batch would then meet other dropout masks than the same mini-batch
read from memory. :class:`OrderedAnnTorchDataset` puts the rows back in the order the sampler asked for,
so the same seed trains the same weights from a file as from memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from scipy import sparse
from scvi.data import AnnDataManager, AnnTorchDataset
from scvi.data._utils import scipy_to_torch_sparse
from torch.utils.data import Subset

from crossmodalnet._utils import is_in_memory, sorting_permutation

if TYPE_CHECKING:
    from collections.abc import Sequence


def _permute_rows(value, order: np.ndarray):
    """``value[order]`` for a mini-batch entry: a NumPy array or a (sparse CSR/CSC) torch tensor."""
    if isinstance(value, torch.Tensor) and value.layout in (torch.sparse_csr, torch.sparse_csc):
        coo = value.to_sparse_coo().coalesce()
        rows, cols = coo.indices().numpy()
        matrix = sparse.coo_matrix((coo.values().numpy(), (rows, cols)), shape=tuple(value.shape))
        matrix = matrix.tocsr()[order]
        return scipy_to_torch_sparse(matrix if value.layout == torch.sparse_csr else matrix.tocsc())
    return value[order]


class OrderedAnnTorchDataset(AnnTorchDataset):
    """:class:`~scvi.data.AnnTorchDataset` that returns the rows of a mini-batch in the order asked for.

    When a registered matrix is not in memory (backed HDF5, or another on-disk array), the mini-batch is
    read with increasing row positions, as scvi-tools does for a backed AnnData, and its rows are then
    put back in the sampler's order. In-memory data is read exactly as by scvi-tools.
    """

    def __getitem__(self, indexes: int | Sequence[int] | slice) -> dict[str, np.ndarray | torch.Tensor]:
        if isinstance(indexes, int | np.integer | slice) or not self.on_disk:
            return super().__getitem__(indexes)
        indexes = np.asarray(indexes)
        order, inverse = sorting_permutation(indexes)
        batch = super().__getitem__(indexes[order])
        return {key: _permute_rows(value, inverse) for key, value in batch.items()}

    @property
    def on_disk(self) -> bool:
        """Whether a registered array is read from disk (not a NumPy array, SciPy matrix or DataFrame)."""
        if not hasattr(self, "_on_disk"):
            self._on_disk = any(
                not (is_in_memory(value) or isinstance(value, pd.DataFrame | str)) for value in self.data.values()
            )
        return self._on_disk


class CrossmodalDataManager(AnnDataManager):
    """scvi-tools' :class:`~scvi.data.AnnDataManager` whose torch datasets are :class:`OrderedAnnTorchDataset`."""

    def create_torch_dataset(
        self,
        indices: Sequence[int] | Sequence[bool] | None = None,
        data_and_attributes: list[str] | dict[str, np.dtype] | None = None,
        load_sparse_tensor: bool = False,  # noqa: FBT001, FBT002 (scvi-tools' signature)
    ) -> OrderedAnnTorchDataset | Subset:
        """The torch dataset of the registered cells ``indices`` (all by default), as scvi-tools builds it."""
        dataset = OrderedAnnTorchDataset(
            self, getitem_tensors=data_and_attributes, load_sparse_tensor=load_sparse_tensor
        )
        return dataset if indices is None else Subset(dataset, indices)
