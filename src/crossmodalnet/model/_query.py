"""Query data: match the genes of new data to the genes the model was trained on."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from crossmodalnet._gene_matching import match_names, strip_version

if TYPE_CHECKING:
    from collections.abc import Sequence


def gene_id_columns(var: pd.DataFrame) -> dict[str, np.ndarray]:
    """Text columns of the RNA ``var`` with one distinct value per gene (gene IDs), saved with the model."""
    out = {}
    for col in var.columns:
        values = var[col]
        if (
            pd.api.types.is_object_dtype(values) or isinstance(values.dtype, pd.CategoricalDtype | pd.StringDtype)
        ) and (values.notna().all() and values.is_unique):
            out[str(col)] = values.astype(str).to_numpy()
    return out


class QueryMixin:
    """Gene matching of query data against the model's genes (names, or IDs saved with the model)."""

    def _query_gene_ids(self, gene_id_column: str, model_gene_ids: Sequence[str] | None) -> pd.Index:
        """IDs of the model's genes, aligned with ``gene_names``: given, saved with the model, or from its data."""
        genes = pd.Index(self.gene_names)
        if model_gene_ids is not None:
            ids = pd.Index(np.asarray(model_gene_ids).astype(str))
            if len(ids) != len(genes):
                raise ValueError(
                    f"`model_gene_ids` has {len(ids)} entries; the model has {len(genes)} genes (`model.gene_names`)."
                )
            return ids
        saved = getattr(self, "gene_ids_", None) or {}
        for column in (gene_id_column, "gene_ids"):
            if column in saved and len(saved[column]) == len(genes):
                return pd.Index(np.asarray(saved[column]).astype(str))
        train = getattr(self, "adata", None)
        rna_key = self.get_setup_arg("rna_key")
        if train is None or rna_key not in getattr(train, "mod", {}):
            raise ValueError(
                f"Matching by `gene_id_column={gene_id_column!r}` needs the model's gene IDs, but the model has no "
                f"training data attached and saved no `var[{gene_id_column!r}]` of its genes (it saves the ID columns "
                f"of its RNA `var`: {sorted(saved)}). Pass `model_gene_ids=` (IDs aligned with `model.gene_names`)."
            )
        var = train.mod[rna_key].var
        column = gene_id_column if gene_id_column in var else ("gene_ids" if "gene_ids" in var else None)
        if column is None:
            raise ValueError(
                f"The model's training data has neither `var[{gene_id_column!r}]` nor `var['gene_ids']` in modality "
                f"{rna_key!r}. Pass `model_gene_ids=` (IDs aligned with `model.gene_names`)."
            )
        return pd.Index(var[column].reindex(genes).astype(str).to_numpy())

    def _match_query_genes(
        self,
        var: pd.DataFrame,
        *,
        gene_id_column: str | None,
        model_gene_ids: Sequence[str] | None,
        rna_key: str,
        caller: str,
    ) -> tuple[np.ndarray, dict]:
        """Position of every model gene in a query's RNA ``var`` (-1 if missing) and a coverage record.

        Genes are matched by name, or by the ``var`` column ``gene_id_column`` against the model's
        gene IDs (Ensembl versions ignored). Used by :func:`crossmodalnet.pp.harmonize_genes` and the
        :mod:`crossmodalnet.tl` functions.
        """
        genes = pd.Index(self.gene_names)
        if gene_id_column is None:
            query, reference = pd.Index(var.index.astype(str)), genes
        else:
            if gene_id_column not in var:
                raise KeyError(
                    f"{caller}: `gene_id_column={gene_id_column!r}` is not a column of `mdata[{rna_key!r}].var`; "
                    f"columns are {list(var.columns)}."
                )
            query = strip_version(pd.Index(var[gene_id_column].astype(str)))
            reference = strip_version(self._query_gene_ids(gene_id_column, model_gene_ids))
        return match_names(query, reference, genes, gene_id_column=gene_id_column, rna_key=rna_key, caller=caller)
