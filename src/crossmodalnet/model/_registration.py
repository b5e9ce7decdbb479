"""Registration: the scvi-tools fields of a MuData (RNA and protein layers, time and batch) and their names."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pandas.api.types import CategoricalDtype
from scvi.data import fields
from scvi.data._utils import _make_column_categorical

from crossmodalnet._constants import REGISTRY_KEYS
from crossmodalnet._utils import check_current

from ._validation import validate_setup

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData


class _ObservedCategoricalObsField(fields.CategoricalObsField):
    """scvi-tools' categorical ``obs`` field over the categories that have cells.

    A categorical column keeps the levels of cells that were filtered out; scvi-tools would count
    each as a category (a batch with no cells, its own embedding and a discriminator class that
    never occurs). Only the levels present are registered, in their original order; like scvi-tools'
    field, it writes the codes into ``obs['_scvi_batch']`` and nothing else.
    """

    def register_field(self, adata: AnnData) -> dict:
        registered = super().register_field(adata)
        if self.is_default:
            return registered
        column = getattr(adata, self.attr_name)[self._original_attr_key]
        present = column.astype("category").cat.remove_unused_categories()
        mapping = _make_column_categorical(
            getattr(adata, self.attr_name),
            self._original_attr_key,
            self.attr_key,
            categorical_dtype=CategoricalDtype(present.cat.categories, ordered=present.cat.ordered),
        )
        return {**registered, self.CATEGORICAL_MAPPING_KEY: mapping}


_MuDataObservedCategoricalObsField = fields.MuDataWrapper(_ObservedCategoricalObsField)


def checked_fields(
    mdata: MuData,
    *,
    rna_key: str,
    protein_key: str,
    rna_layer: str | None,
    protein_layer: str | None,
    time_key: str | None,
    batch_key: str | None,
    protein_mask_layer: str | None = None,
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
    protein_mask_layer
        Boolean layer of the protein modality, ``True`` where a value was measured; ``None``: NaN marks
        the values not measured.

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
        protein_mask_layer=protein_mask_layer,
    )
    mask = (
        []
        if protein_mask_layer is None
        else [
            fields.MuDataLayerField(
                REGISTRY_KEYS.PROTEIN_MASK_KEY,
                protein_mask_layer,
                mod_key=protein_key,
                is_count_data=False,
                mod_required=True,
            )
        ]
    )
    return [
        fields.MuDataLayerField(
            REGISTRY_KEYS.X_KEY, rna_layer, mod_key=rna_key, is_count_data=False, mod_required=True
        ),
        fields.MuDataLayerField(
            REGISTRY_KEYS.PROTEIN_KEY, protein_layer, mod_key=protein_key, is_count_data=False, mod_required=True
        ),
        fields.MuDataCategoricalObsField(REGISTRY_KEYS.TIME_KEY, columns.get("time_key"), mod_key=None),
        _MuDataObservedCategoricalObsField(REGISTRY_KEYS.BATCH_KEY, columns.get("batch_key"), mod_key=None),
        *mask,
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

    def _check_registered_data(self, caller: str) -> None:
        """Raise a :class:`ValueError` if the registered MuData no longer holds the genes and proteins set up.

        scvi-tools reads the registered modalities by position; one replaced after ``setup_mudata``
        (e.g. proteins removed) would be read with the wrong columns or fail with an ``IndexError``.
        """
        mdata = self.adata
        if mdata is None:
            return
        check_current(mdata, caller)
        for arg, names, what in (
            ("rna_key", self.gene_names, "genes"),
            ("protein_key", self.protein_names, "proteins"),
        ):
            key = self.get_setup_arg(arg)
            mod = mdata.mod.get(key)
            now = pd.Index([]) if mod is None else pd.Index(np.asarray(mod.var_names).astype(str))
            if not now.equals(names):
                changed = names.symmetric_difference(now)
                detail = f"differing: {changed[:5].tolist()}" if len(changed) else "the same names in another order"
                raise ValueError(
                    f"{caller}: `mdata[{key!r}]` no longer holds the {len(names)} {what} the model was set up with "
                    f"(it has {len(now)}; {detail}): the modality was replaced or subset "
                    "after `setup_mudata`. Restore it, or set up and train a new model on the changed data "
                    "(remove proteins with `cmn.pp.drop_proteins` before `setup_mudata`)."
                )

    @property
    def batch_categories(self) -> np.ndarray:
        """Registered batch categories."""
        return np.asarray(self.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping)
