"""Write the basal (time-free) latent of every cell into a MuData."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from crossmodalnet import _keys
from crossmodalnet._constants import DEFAULT_RNA_KEY
from crossmodalnet._docs import docs

from ._utils import check_model, log_added, model_info, model_input, portable

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mudata import MuData

    from crossmodalnet.model import CrossmodalNet

_CALLER = "cmn.tl.basal_embedding"


@docs.dedent
def basal_embedding(
    mdata: MuData,
    model: CrossmodalNet,
    *,
    rna_key: str = DEFAULT_RNA_KEY,
    gene_id_column: str | None = None,
    model_gene_ids: Sequence[str] | None = None,
    min_coverage: float = 0.5,
    batch_size: int = 1024,
    key_added: str = _keys.BASAL,
    copy: bool = False,
) -> MuData | None:
    """Embed every cell in the model's basal latent space, from which time was removed adversarially.

    The basal latent ``z`` is the encoder output before the time (and batch) embedding is added;
    the discriminators were trained to be unable to read the time point from it :cite:p:`Lample2017`.
    Use it like any other embedding: ``sc.pp.neighbors(mdata, use_rep="X_cmn_basal")``,
    then ``sc.tl.umap(mdata)`` or ``sc.pl.embedding(mdata, basis="cmn_basal")``.

    Parameters
    ----------
    %(mdata_query)s
    %(model)s
    %(rna_key)s
    %(harmonize)s
    %(batch_size)s
    %(key_added)s
    %(copy)s

    Returns
    -------
    ``None``, or a copy if ``copy=True``. Sets:

    ``mdata.obsm['X_' + key_added]``
        :class:`~numpy.ndarray` of shape (cells, ``n_latent``), ``float32``; NaN rows for cells
        without RNA (drop those before :func:`scanpy.pp.neighbors`).
    ``mdata.uns[key_added]``
        ``params``, ``model``, ``protein_names``, ``coverage`` (and ``genes`` when genes had to be
        matched).

    Examples
    --------
    >>> cmn.tl.basal_embedding(mdata, model)
    >>> sc.pp.neighbors(mdata, use_rep="X_cmn_basal")
    >>> sc.tl.umap(mdata)
    >>> sc.pl.embedding(mdata, basis="cmn_basal", color="time")
    """
    keys = _keys.Keys(key_added)
    model = check_model(model, _CALLER)
    inp = model_input(
        mdata,
        model,
        rna_key=rna_key,
        gene_id_column=gene_id_column,
        model_gene_ids=model_gene_ids,
        min_coverage=min_coverage,
        caller=_CALLER,
    )
    z = model.get_latent_representation(inp.mdata, batch_size=batch_size)
    if inp.mdata is not mdata:
        z = pd.DataFrame(z, index=inp.mdata.obs_names).reindex(mdata.obs_names).to_numpy(dtype=z.dtype)
    meta = {
        "params": {
            "rna_key": rna_key,
            "gene_id_column": gene_id_column,
            "min_coverage": min_coverage,
            "batch_size": batch_size,
            "key_added": key_added,
        },
        "model": model_info(model),
        "protein_names": list(model.protein_names),
        "coverage": inp.coverage,
        "genes": inp.genes,
    }
    if copy:
        mdata = mdata.copy()
    mdata.obsm[keys.embedding] = z
    mdata.uns[keys.uns] = portable(meta)
    log_added(
        _CALLER, [f"mdata.obsm[{keys.embedding!r}] ({z.shape[0]} cells × {z.shape[1]})", f"mdata.uns[{keys.uns!r}]"]
    )
    return mdata if copy else None
