"""Gene-set enrichment (GSEA prerank, gseapy) of a protein's saliency ranking."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from crossmodalnet import _keys
from crossmodalnet._constants import DEFAULT_RNA_KEY
from crossmodalnet._docs import docs
from crossmodalnet._utils import get_modality
from crossmodalnet.pp._utils import resolve_seed, select_names

from ._utils import log_added, portable

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mudata import MuData

logger = logging.getLogger(__name__)

_CALLER = "cmn.tl.enrichment"
# gseapy's res2d columns → the names stored in `.uns` (HDF5-friendly, no spaces or '%').
_COLUMNS = {
    "Term": "term",
    "ES": "es",
    "NES": "nes",
    "NOM p-val": "pval",
    "FDR q-val": "fdr",
    "FWER p-val": "fwer_pval",
    "Tag %": "tag_fraction",
    "Gene %": "gene_fraction",
    "Lead_genes": "lead_genes",
}


def _load_gene_sets(gene_sets: Mapping[str, Sequence[str]] | str | os.PathLike) -> dict[str, list[str]]:
    import gseapy

    if isinstance(gene_sets, str | os.PathLike):
        path = Path(gene_sets)
        if not path.is_file():
            raise ValueError(
                f"{_CALLER}: `gene_sets={str(gene_sets)!r}` is not an existing file. Pass a GMT file path or a "
                "dict {set name: genes}; gseapy library names (which need the network) are not supported."
            )
        sets = gseapy.read_gmt(str(path))
    elif isinstance(gene_sets, Mapping):
        sets = gene_sets
    else:
        raise TypeError(f"{_CALLER}: `gene_sets` must be a dict or a GMT file path, got {type(gene_sets).__name__}.")
    out = {str(k): [str(g) for g in v] for k, v in sets.items()}
    if not out:
        raise ValueError(f"{_CALLER}: `gene_sets` is empty.")
    return out


def _check_sizes(sets: dict[str, list[str]], genes: pd.Index, min_size: int, max_size: int, protein: str) -> None:
    sizes = np.array([len(genes.intersection(pd.Index(v))) for v in sets.values()])
    if not ((sizes >= min_size) & (sizes <= max_size)).any():
        raise ValueError(
            f"{_CALLER}: no gene set has between {min_size} and {max_size} genes in the saliency ranking of "
            f"{protein!r} (largest overlap: {sizes.max()} genes). Check that the gene sets use the same gene "
            "names as `var_names` (symbols vs IDs, species), or lower `min_size`."
        )


def _prerank(ranking: pd.Series, sets: dict, *, min_size, max_size, permutation_num, weight, seed, n_running) -> dict:
    import gseapy

    res = gseapy.prerank(
        rnk=ranking,
        gene_sets=sets,
        min_size=min_size,
        max_size=max_size,
        permutation_num=permutation_num,
        weight=weight,
        threads=1,
        seed=seed,
        outdir=None,
        no_plot=True,
        verbose=False,
    )
    table = res.res2d.rename(columns=_COLUMNS)[list(_COLUMNS.values())].copy()
    for col in ("es", "nes", "pval", "fdr", "fwer_pval"):
        table[col] = pd.to_numeric(table[col], errors="coerce").astype(float)
    for col in ("term", "tag_fraction", "gene_fraction", "lead_genes"):
        table[col] = table[col].astype(str)
    table = table.assign(_abs=table["nes"].abs()).sort_values(["fdr", "_abs"], ascending=[True, False], kind="stable")
    table = table.drop(columns="_abs").reset_index(drop=True)

    terms = table["term"].iloc[:n_running].tolist()
    ranked = np.asarray(res.ranking, dtype=np.float64)
    res_curves = np.vstack([np.asarray(res.results[t]["RES"], dtype=np.float64) for t in terms]) if terms else None
    hits = np.zeros((len(terms), ranked.size), dtype=bool)
    for i, t in enumerate(terms):
        hits[i, np.asarray(res.results[t]["hits"], dtype=np.int64)] = True
    running = {
        "term": np.asarray(terms, dtype=str),
        "es": table["es"].to_numpy()[: len(terms)],
        "nes": table["nes"].to_numpy()[: len(terms)],
        "fdr": table["fdr"].to_numpy()[: len(terms)],
        "res": res_curves if res_curves is not None else np.zeros((0, ranked.size)),
        "hits": hits,
        "ranked_scores": ranked,
    }
    return {"results": {c: table[c].to_numpy() for c in table.columns}, "running": running}


@docs.dedent
def enrichment(
    mdata: MuData,
    *,
    protein: str | Sequence[str],
    gene_sets: Mapping[str, Sequence[str]] | str | os.PathLike,
    saliency_key: str = _keys.SALIENCY,
    rna_key: str = DEFAULT_RNA_KEY,
    min_size: int = 5,
    max_size: int = 500,
    permutation_num: int = 1000,
    weight: float = 1.0,
    n_running: int = 10,
    rng: int | np.random.Generator | None = 0,
    key_added: str = _keys.ENRICHMENT,
    copy: bool = False,
) -> MuData | None:
    """Test gene sets for enrichment at the top or bottom of a protein's saliency ranking.

    Runs GSEA prerank :cite:p:`Subramanian2005` with :func:`gseapy.prerank` :cite:p:`Fang2023` on the
    scores stored by :func:`crossmodalnet.tl.saliency`, as the paper does for CD38 and Tim3
    (its Fig. 4). Positive NES: the set is enriched among genes with large positive scores (or large
    magnitudes, for ``abs_*`` saliency). Runs offline and single-threaded, so results are
    reproducible for a fixed ``rng``.

    Parameters
    ----------
    %(mdata)s It must hold ``mdata[rna_key].varm[saliency_key]``.
    protein
        Protein or proteins to test; each gets its own results.
    gene_sets
        A dict {set name: genes} or the path of a GMT file. Gene names must match
        ``mdata[rna_key].var_names``. gseapy's named libraries are not accepted: they need the network.
    saliency_key
        ``key_added`` of :func:`crossmodalnet.tl.saliency`.
    %(rna_key)s
    min_size, max_size
        Gene sets with fewer or more genes in the ranking are skipped.
    permutation_num
        Number of gene-set permutations for the p-values.
    weight
        GSEA weight of the ranking score (``1``: the classic weighted statistic).
    n_running
        Number of top terms per protein whose running enrichment score is stored for
        :func:`crossmodalnet.pl.enrichment`.
    %(rng)s Seeds the permutations.
    %(key_added)s
    %(copy)s

    Returns
    -------
    ``None``, or a copy if ``copy=True``. Sets ``mdata.uns[key_added]`` with:

    ``results``
        Protein → results table as a dict of equal-length arrays (``term``, ``es``, ``nes``, ``pval``,
        ``fdr``, ``fwer_pval``, ``tag_fraction``, ``gene_fraction``, ``lead_genes``), sorted by FDR
        then by absolute NES; ``pandas.DataFrame(mdata.uns[key_added]["results"][protein])`` gives the
        table.
    ``running``
        Protein → the ``n_running`` top terms: ``term``, ``es``, ``nes``, ``fdr``, ``res`` (running
        score, terms × genes), ``hits`` (boolean, terms × genes) and ``ranked_scores`` (the ranking,
        descending).
    ``params``
        The arguments (a dict ``gene_sets`` is recorded by its number of sets).

    Examples
    --------
    >>> cmn.tl.saliency(mdata, model, proteins="CD38")
    >>> cmn.tl.enrichment(mdata, protein="CD38", gene_sets="h.all.v7.0.symbols.gmt")
    >>> pd.DataFrame(mdata.uns["cmn_enrichment"]["results"]["CD38"]).head()
    """
    keys = _keys.Keys(key_added)
    rna = get_modality(mdata, rna_key, _CALLER, role="RNA")
    if saliency_key not in rna.varm:
        raise KeyError(
            f"{_CALLER}: no saliency in `mdata[{rna_key!r}].varm[{saliency_key!r}]`; run `cmn.tl.saliency` first."
        )
    scores = rna.varm[saliency_key]
    if not isinstance(scores, pd.DataFrame):
        raise TypeError(
            f"{_CALLER}: `mdata[{rna_key!r}].varm[{saliency_key!r}]` must be a DataFrame (genes × proteins)."
        )
    proteins = select_names(protein, scores.columns, "protein(s)", _CALLER)
    if not 1 <= min_size <= max_size:
        raise ValueError(f"{_CALLER}: need 1 <= `min_size` <= `max_size`, got {min_size}, {max_size}.")
    if n_running < 0:
        raise ValueError(f"{_CALLER}: `n_running` must be non-negative, got {n_running}.")
    sets = _load_gene_sets(gene_sets)
    seed = resolve_seed(np.random.default_rng() if rng is None else rng)

    results, running = {}, {}
    for p in proteins:
        ranking = scores[p].dropna()
        ranking = ranking[~ranking.index.duplicated()].sort_values(ascending=False)
        ranking.index = ranking.index.astype(str)
        _check_sizes(sets, ranking.index, min_size, max_size, p)
        out = _prerank(
            ranking,
            sets,
            min_size=min_size,
            max_size=max_size,
            permutation_num=permutation_num,
            weight=weight,
            seed=seed,
            n_running=n_running,
        )
        results[p], running[p] = out["results"], out["running"]

    record = {
        "results": results,
        "running": running,
        "params": {
            "protein": proteins,
            "gene_sets": str(gene_sets) if not isinstance(gene_sets, Mapping) else f"dict of {len(sets)} sets",
            "saliency_key": saliency_key,
            "rna_key": rna_key,
            "min_size": min_size,
            "max_size": max_size,
            "permutation_num": permutation_num,
            "weight": weight,
            "n_running": n_running,
            "rng": seed,
            "key_added": key_added,
        },
    }
    if copy:
        mdata = mdata.copy()
    mdata.uns[keys.uns] = portable(record)
    log_added(_CALLER, [f"mdata.uns[{keys.uns!r}] ({len(proteins)} protein(s), {len(sets)} gene sets)"])
    for p in proteins[:5]:
        top = results[p]
        if len(top["term"]):
            logger.info(
                "%s: %s: top term %s (NES %.2f, FDR %.3g)", _CALLER, p, top["term"][0], top["nes"][0], top["fdr"][0]
            )
    return mdata if copy else None
