"""Wrap RNA-only data in a MuData."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from crossmodalnet._constants import DEFAULT_RNA_KEY

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

logger = logging.getLogger(__name__)


def to_mudata(adata: AnnData, *, rna_key: str = DEFAULT_RNA_KEY) -> MuData:
    """Wrap an RNA-only AnnData (e.g. an atlas without proteins) in a MuData.

    Every ``cmn`` function takes a MuData; this is the one way in for an AnnData. Use it for query
    data to impute proteins into with :func:`crossmodalnet.tl.predict_protein`.

    Parameters
    ----------
    adata
        Cells × genes, e.g. log-normalised expression.
    rna_key
        Name to give the RNA modality.

    Returns
    -------
    MuData with the single modality ``rna_key``, which is ``adata`` itself (not a copy), and the
    columns of ``adata.obs`` (time point, batch ...) copied to ``mdata.obs`` under their own names.

    Examples
    --------
    >>> mdata = cmn.pp.to_mudata(adata)
    >>> cmn.tl.predict_protein(mdata, model, time=3)
    """
    import anndata as ad
    import mudata as md

    if not isinstance(adata, ad.AnnData):
        raise TypeError(f"cmn.pp.to_mudata: expected an AnnData, got {type(adata).__name__}.")
    if not adata.obs_names.is_unique:
        raise ValueError("cmn.pp.to_mudata: `adata.obs_names` are not unique; run `adata.obs_names_make_unique()`.")
    mdata = md.MuData({rna_key: adata})
    for col in adata.obs.columns:
        mdata.obs[col] = adata.obs[col].reindex(mdata.obs_names)
    logger.debug("wrapped a %d × %d AnnData as mdata[%r]", adata.n_obs, adata.n_vars, rna_key)
    return mdata
