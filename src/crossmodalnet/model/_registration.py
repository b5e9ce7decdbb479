"""Registration: the scvi-tools fields of a MuData (RNA and protein layers, time and batch) and their names."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scvi.data import fields

from crossmodalnet._constants import REGISTRY_KEYS

from ._validation import validate_setup

if TYPE_CHECKING:
    from mudata import MuData


def checked_fields(
    mdata: MuData,
    *,
    rna_key: str,
    protein_key: str,
    rna_layer: str | None,
    protein_layer: str | None,
    time_key: str | None,
    batch_key: str | None,
) -> list:
    """Check ``mdata`` for :meth:`~crossmodalnet.model.CrossmodalNet.setup_mudata` and return its fields.

    Parameters
    ----------
    mdata
        CITE-seq MuData; the checks do not change it.
    rna_key, protein_key
        Modalities of the RNA (input) and the proteins (target).
    rna_layer, protein_layer
        Their layers; ``None`` uses ``.X``.
    time_key, batch_key
        Columns of ``mdata.obs`` with the time point and the batch; ``None``: one category.

    Returns
    -------
    The :mod:`scvi.data.fields`, in registry order, to pass to :class:`~scvi.data.AnnDataManager`.
    """
    columns = validate_setup(
        mdata,
        rna_key=rna_key,
        protein_key=protein_key,
        rna_layer=rna_layer,
        protein_layer=protein_layer,
        time_key=time_key,
        batch_key=batch_key,
    )
    return [
        fields.MuDataLayerField(
            REGISTRY_KEYS.X_KEY, rna_layer, mod_key=rna_key, is_count_data=False, mod_required=True
        ),
        fields.MuDataLayerField(
            REGISTRY_KEYS.PROTEIN_KEY, protein_layer, mod_key=protein_key, is_count_data=False, mod_required=True
        ),
        fields.MuDataCategoricalObsField(REGISTRY_KEYS.TIME_KEY, columns.get("time_key"), mod_key=None),
        fields.MuDataCategoricalObsField(REGISTRY_KEYS.BATCH_KEY, columns.get("batch_key"), mod_key=None),
    ]


class RegisteredNamesMixin:
    """Genes, proteins and batch categories of a model, as registered by :meth:`setup_mudata`."""

    @property
    def gene_names(self) -> pd.Index:
        """Genes the model takes as input, in order."""
        return pd.Index(np.asarray(self.get_state_registry(REGISTRY_KEYS.X_KEY).column_names).astype(str))

    @property
    def protein_names(self) -> pd.Index:
        """Proteins the model predicts, in order."""
        return pd.Index(np.asarray(self.get_state_registry(REGISTRY_KEYS.PROTEIN_KEY).column_names).astype(str))

    @property
    def n_genes(self) -> int:
        """Number of input genes."""
        return len(self.gene_names)

    @property
    def n_proteins(self) -> int:
        """Number of predicted proteins."""
        return len(self.protein_names)

    @property
    def batch_categories(self) -> np.ndarray:
        """Registered batch categories."""
        return np.asarray(self.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping)
