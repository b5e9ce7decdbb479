"""Gene-set enrichment (GSEA prerank, gseapy) of a protein's saliency ranking."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from crossmodalnet import _keys
from crossmodalnet._constants import DEFAULT_RNA_KEY
from crossmodalnet._docs import docs
from crossmodalnet._utils import get_modality, resolve_seed, select_names

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


def _use_upper(
    mode: Literal["auto", "exact", "upper"], genes: pd.Index, sets: dict[str, list[str]]
) -> tuple[bool, int, int]:
    """Whether to match upper-cased symbols, with the exact and upper-cased overlaps of genes and sets."""
    if mode not in ("auto", "exact", "upper"):
        raise ValueError(f"{_CALLER}: `symbol_match` must be 'auto', 'exact' or 'upper', got {mode!r}.")
    members = {g for v in sets.values() for g in v}
    names = {str(g) for g in genes}
    exact = len(names & members)
    upper = len({g.upper() for g in names} & {g.upper() for g in members})
    if mode == "auto":
        return upper > 2 * exact, exact, upper
    return mode == "upper", exact, upper


def _check_sizes(sets: dict[str, list[str]], genes: pd.Index, min_size: int, max_size: int, protein: str) -> None:
    sizes = np.array([len(genes.intersection(pd.Index(v))) for v in sets.values()])
    if not ((sizes >= min_size) & (sizes <= max_size)).any():
        raise ValueError(
            f"{_CALLER}: no gene set has between {min_size} and {max_size} genes in the saliency ranking of "
            f"{protein!r} (largest overlap: {sizes.max()} genes). Check that the gene sets use the same gene "
            "names as `var_names` (symbols vs IDs, species), or lower `min_size`."
        )


_MAX_TIED_SHARE = 0.5
"""Above this share of genes with one saliency value, enrichment rests on the few others: warn."""


def _warn_ties(ranking: pd.Series, protein: str, method: str | None) -> float:
    """Share of the ranking held by its most common score; warn when it exceeds ``_MAX_TIED_SHARE``."""
    counts = ranking.value_counts(sort=True)
    if counts.empty:
        return 0.0
    share = float(counts.iloc[0]) / ranking.size
    if share <= _MAX_TIED_SHARE:
        return share
    if method in ("gradient_x_input", "integrated_gradients"):
        fix = (
            f"with `method={method!r}` a gene not expressed in the scored cells scores 0 from a zero baseline: "
            "`method='gradient'` or `'gradient_x_sd'` scores it by its gradient"
        )
    else:
        fix = (
            "genes that no part of the model uses score 0: the linear path weights only its selected genes, and "
            "the networks add nothing when training kept the ridge start (`model.split_['best_epoch'] == -1`) or "
            "do not see a gene (`input_reduction`). A model with `linear_path_genes='all'` and no `input_reduction`, "
            "or whose networks improve on the ridge start, ranks every gene; another saliency `method` does not "
            "untie genes without weight"
        )
    warnings.warn(
        f"{_CALLER}: {int(counts.iloc[0])} of {ranking.size} genes ({share:.1%}) share one saliency value "
        f"({counts.index[0]:.3g}) for {protein!r}. GSEA orders tied genes arbitrarily, so the enrichment rests on the "
        f"{ranking.size - int(counts.iloc[0])} other genes and its FDR and running score are not to be trusted. "
        f"For a full ranking: {fix}.",
        UserWarning,
        stacklevel=3,
    )
    return share


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
    symbol_match: Literal["auto", "exact", "upper"] = "auto",
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
        ``mdata[rna_key].var_names`` (see ``symbol_match`` for mouse genes against human sets). gseapy's
        named libraries are not accepted: they need the network.
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
    symbol_match
        How gene names are matched to the gene sets. ``"exact"``: as written. ``"upper"``: by upper-cased
        symbol, so mouse genes (``Cd19``) match human gene sets (``CD19``). ``"auto"``: exact, unless
        upper-casing finds more than twice as many of the genes in the sets, as with mouse genes against
        human sets; then by upper-cased symbol, with one warning. Upper-casing is not an orthologue
        mapping: it pairs genes whose mouse and human symbols are the same up to case (most one-to-one
        orthologues) and misses the others (``H2-Ea`` / ``HLA-DRA``); for an orthologue mapping, translate
        the gene sets first and pass them as a dict. Lead genes are reported as spelled in ``var_names``.
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
    ``symbol_match``
        How the genes were matched: ``"exact"`` or ``"upper"``.
    ``tied_fraction``
        Protein → share of its ranking held by the most common saliency value. Above 0.5 a
        :class:`UserWarning` says that the enrichment rests on the few other genes, and how to get a full
        ranking (docs page *Interpretability*).
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
    upper, n_exact, n_upper = _use_upper(symbol_match, scores.index, sets)
    if upper:
        sets = {k: list(dict.fromkeys(g.upper() for g in v)) for k, v in sets.items()}
        if symbol_match == "auto":
            warnings.warn(
                f"{_CALLER}: {n_exact} gene(s) of `mdata[{rna_key!r}]` are in the gene sets as written, "
                f"{n_upper} after upper-casing (as with mouse genes against human gene sets): matching by "
                "upper-cased symbol. This is not an orthologue mapping; pass `symbol_match='upper'` to "
                "accept it without this warning, or `symbol_match='exact'` to turn it off.",
                UserWarning,
                stacklevel=2,
            )

    method = (mdata.uns.get(saliency_key) or {}).get("method")
    results, running, tied = {}, {}, {}
    for p in proteins:
        ranking = scores[p].dropna()
        ranking.index = ranking.index.astype(str)
        if upper:  # genes equal up to case: keep the one with the highest score
            ranking = ranking.sort_values(ascending=False, kind="stable")
            ranking = ranking[~ranking.index.str.upper().duplicated()]
            spelled = dict(zip(ranking.index.str.upper(), ranking.index, strict=True))
            ranking.index = ranking.index.str.upper()
        else:
            ranking = ranking[~ranking.index.duplicated()].sort_values(ascending=False)
        _check_sizes(sets, ranking.index, min_size, max_size, p)
        tied[p] = _warn_ties(ranking, p, None if method is None else str(method))
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
        if upper:  # report lead genes as spelled in var_names
            out["results"]["lead_genes"] = np.asarray(
                [
                    ";".join(spelled.get(g, g) for g in str(lead).split(";") if g)
                    for lead in out["results"]["lead_genes"]
                ],
                dtype=str,
            )
        results[p], running[p] = out["results"], out["running"]

    record = {
        "results": results,
        "running": running,
        "symbol_match": "upper" if upper else "exact",
        "tied_fraction": tied,
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
            "symbol_match": symbol_match,
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
