"""Wrap RNA-only data in a MuData; remove proteins from one."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from crossmodalnet._constants import DEFAULT_PROTEIN_KEY, DEFAULT_RNA_KEY
from crossmodalnet._docs import docs
from crossmodalnet._utils import get_modality, shared_feature_names_quiet

if TYPE_CHECKING:
    from collections.abc import Sequence

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
    import pandas as pd

    if not isinstance(adata, ad.AnnData):
        raise TypeError(f"cmn.pp.to_mudata: expected an AnnData, got {type(adata).__name__}.")
    lazy = [name for name in ("obs", "var") if not isinstance(getattr(adata, name), pd.DataFrame)]
    if lazy:  # anndata.experimental.read_lazy: mudata needs obs and var as DataFrames
        raise TypeError(
            f"cmn.pp.to_mudata: `adata.{lazy[0]}` is a {type(getattr(adata, lazy[0])).__name__}, not a pandas "
            "DataFrame (an AnnData from `anndata.experimental.read_lazy`), which mudata cannot wrap. Keep only the "
            "matrix lazy: `ad.AnnData(X=ad.experimental.read_elem_lazy(f['X']), obs=ad.io.read_elem(f['obs']), "
            "var=ad.io.read_elem(f['var']))` with `f = h5py.File(path)` or `zarr.open_group(path)` (docs page "
            "*Past one machine*)."
        )
    if not adata.obs_names.is_unique:
        raise ValueError("cmn.pp.to_mudata: `adata.obs_names` are not unique; run `adata.obs_names_make_unique()`.")
    mdata = md.MuData({rna_key: adata})
    for col in adata.obs.columns:
        mdata.obs[col] = adata.obs[col].reindex(mdata.obs_names)
    logger.debug("wrapped a %d × %d AnnData as mdata[%r]", adata.n_obs, adata.n_vars, rna_key)
    return mdata


@docs.dedent
def drop_proteins(
    mdata: MuData,
    names: str | Sequence[str],
    *,
    protein_key: str = DEFAULT_PROTEIN_KEY,
    copy: bool = False,
) -> MuData | None:
    """Remove proteins (isotype controls, hashtags) from the protein modality and update the MuData.

    Isotype controls and hashtags are no proteins to predict from RNA (docs page *Using a model in
    practice*, *Isotype controls and hashtags*). Replacing the modality by hand
    (``mdata.mod["prot"] = mdata["prot"][:, keep].copy()``) leaves ``mdata.var`` describing the old
    modality until ``mdata.update()``, and subsetting such a MuData fails or reads the wrong
    features; this function does both steps. Remove proteins before
    :meth:`~crossmodalnet.model.CrossmodalNet.setup_mudata`: a model set up on the modality refuses it
    once its proteins have changed.

    Parameters
    ----------
    %(mdata)s
    names
        Protein name or names (``var_names`` of ``mdata[protein_key]``) to remove, e.g. the isotype
        controls that ``setup_mudata`` warned about.
    %(protein_key)s
    %(copy)s

    Returns
    -------
    ``None``, or a copy if ``copy=True``. Sets:

    ``mdata.mod[protein_key]``
        A new AnnData without the given proteins (the previous one is not changed); ``mdata.var`` and
        ``mdata.varmap`` are updated to it.

    Examples
    --------
    >>> cmn.pp.drop_proteins(mdata, ["IgG1", "IgG2a", "HTO_1"])
    """
    caller = "cmn.pp.drop_proteins"
    prot = get_modality(mdata, protein_key, caller, role="protein")
    requested = [names] if isinstance(names, str) else [str(n) for n in names]
    available = prot.var_names.astype(str)
    unknown = [n for n in requested if n not in set(available)]
    if unknown:
        raise KeyError(
            f"{caller}: {len(unknown)} name(s) are not proteins of `mdata[{protein_key!r}]`: {unknown[:10]}; "
            f"its proteins are {list(available[:10])}{' ...' if len(available) > 10 else ''}. Check the spelling "
            "(names are case-sensitive)."
        )
    keep = ~available.isin(requested)
    if not keep.any():
        raise ValueError(f"{caller}: removing {requested[:5]} would leave `mdata[{protein_key!r}]` without proteins.")
    if copy:
        mdata = mdata.copy()
    mdata.mod[protein_key] = mdata.mod[protein_key][:, keep].copy()
    with shared_feature_names_quiet():  # gene and protein names overlap in CITE-seq (CD4, CD14)
        mdata.update()
    logger.info(
        "%s: removed %d protein(s) %s from mdata[%r] (%d left); updated the MuData",
        caller,
        len(set(requested)),
        sorted(set(requested))[:10],
        protein_key,
        int(keep.sum()),
    )
    return mdata if copy else None
