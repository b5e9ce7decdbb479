"""Every slot a ``cmn`` writer fills, derived from one ``key_added`` (the idea of scanpy's ``_keys.py``).

Writers in :mod:`crossmodalnet.tl` and :mod:`crossmodalnet.pp` and readers in :mod:`crossmodalnet.pl`
take key names from here, never from f-strings of their own, so a writer and its plot cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

PROTEIN = "cmn_protein"
"""Default ``key_added`` of :func:`crossmodalnet.tl.predict_protein`."""
BASAL = "cmn_basal"
"""Default ``key_added`` of :func:`crossmodalnet.tl.basal_embedding`."""
TIME = "cmn_time"
"""Default ``key_added`` of :func:`crossmodalnet.tl.time_embedding`."""
SALIENCY = "cmn_saliency"
"""Default ``key_added`` of :func:`crossmodalnet.tl.saliency`."""
ENRICHMENT = "cmn_enrichment"
"""Default ``key_added`` of :func:`crossmodalnet.tl.enrichment`."""
HARMONIZE = "cmn_harmonize"
"""Default ``key_added`` of :func:`crossmodalnet.pp.harmonize_genes`."""
PREPROCESSING = "cmn_preprocessing"
"""Key of the normalisation record in ``mdata[mod].uns``, written by the :mod:`crossmodalnet.pp` normalisers."""

ISOTYPES = "cmn_isotype_controls"
"""``mdata[protein_key].obsm`` key of the isotype controls set aside by :func:`crossmodalnet.pp.dsb`."""
PANEL_NAME = "cmn_panel_name"
"""``var`` column keeping each protein's name as given, written by :func:`crossmodalnet.pp.harmonize_proteins` when it renames."""

EMBEDDING_PREFIX = "X_"
"""Prefix of embeddings in ``.obsm``, so ``basis=key_added`` works in :func:`scanpy.pl.embedding`."""


@dataclass(frozen=True)
class Keys:
    """Slots written for one result named ``key_added``.

    Parameters
    ----------
    key_added
        The user-facing handle of the result.
    """

    key_added: str

    def __post_init__(self) -> None:
        if not isinstance(self.key_added, str) or not self.key_added:
            raise ValueError(f"`key_added` must be a non-empty string, got {self.key_added!r}.")
        if "/" in self.key_added:
            raise ValueError(f"`key_added` must not contain '/' (HDF5 would nest it), got {self.key_added!r}.")

    @property
    def uns(self) -> str:
        """Metadata dict in ``.uns``."""
        return self.key_added

    @property
    def obsm(self) -> str:
        """Cell-level table (not an embedding) in ``mdata.obsm``."""
        return self.key_added

    @property
    def obsm_std(self) -> str:
        """Spread of each value of the cell-level table in ``mdata.obsm``: ``key_added`` + ``_std``."""
        return self.key_added + "_std"

    @property
    def obsm_lower(self) -> str:
        """Lower interval bound of each value of the cell-level table: ``key_added`` + ``_lower``."""
        return self.key_added + "_lower"

    @property
    def obsm_upper(self) -> str:
        """Upper interval bound of each value of the cell-level table: ``key_added`` + ``_upper``."""
        return self.key_added + "_upper"

    @property
    def obsm_measured(self) -> str:
        """Which values of the cell-level table were also measured in the MuData: ``key_added`` + ``_measured``."""
        return self.key_added + "_measured"

    @property
    def obsm_predicted(self) -> str:
        """Pure predictions, kept beside a table filled with measured values: ``key_added`` + ``_predicted``."""
        return self.key_added + "_predicted"

    @property
    def varm(self) -> str:
        """Feature-level table in ``mdata[mod].varm``."""
        return self.key_added

    @property
    def embedding(self) -> str:
        """Embedding in ``mdata.obsm``: ``X_`` + ``key_added``."""
        return EMBEDDING_PREFIX + self.key_added
