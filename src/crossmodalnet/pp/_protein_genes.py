"""A curated map from CITE-seq antibody (protein) names to the genes that code for their targets."""

from __future__ import annotations

import functools
import re
import warnings
from importlib import resources
from typing import TYPE_CHECKING, Literal

import pandas as pd

if TYPE_CHECKING:
    from collections.abc import Sequence

_CALLER = "cmn.pp.protein_genes"
_RESOURCE = "protein_genes.tsv"
KINDS = ("gene", "isoform", "complex", "paralogs", "carbohydrate", "tcr", "other", "isotype_control")
"""Kinds of map entry; only the first four have coding genes."""

# Suffixes that panels append to antibody names ("CD3_TotalSeqB", "CD19_PROT", "IgG1_control").
_SUFFIX = re.compile(r"[\s_.-]*(totalseq[\s_-]?[abc]?|prot|adt|cite|antibody|control|ctrl)$", re.IGNORECASE)
# TotalSeq barcode IDs that panels append ("CD19_A0093", "CD4_B0072", "CD8a_C0046").
_BARCODE = re.compile(r"[\s_.-]+[abc]\d{4}$", re.IGNORECASE)
# Prefixes that panels prepend to mark the modality ("ADT_CD19", "prot_CD4").
_PREFIX = re.compile(r"^(adt|prot|ab|cite)[\s_.-]+", re.IGNORECASE)
# Suffixes that make duplicated names unique ("CD4-1", "CD4.1").
_COPY = re.compile(r"[-_.]\d+$")
_ISOTYPE = re.compile(r"isotype|^(mouse|rat|hamster|armenianhamster)?igg\d?[abc]?(k|kappa|l|lambda)?$")


def _key(name: str, *, loose: bool = False) -> str:
    """Lookup key: case-folded without spaces and ``_``; ``loose`` also drops ``-``, ``.``, ``,`` and ``/``."""
    return re.sub(r"[\s_.,/-]" if loose else r"[\s_]", "", str(name)).casefold()


@functools.cache
def _table() -> tuple[pd.DataFrame, dict[str, str], dict[str, str]]:
    """The shipped map (indexed by protein name) and strict and loose lookups from names and aliases."""
    with resources.files("crossmodalnet.pp").joinpath("data", _RESOURCE).open("r", encoding="utf-8") as fh:
        table = pd.read_csv(fh, sep="\t", dtype=str, keep_default_na=False)
    table["genes"] = [tuple(g for g in s.split(";") if g and g != "-") for s in table["genes"]]
    table = table.set_index("protein", drop=False)
    strict: dict[str, str] = {}
    loose: dict[str, str] = {}
    for protein, aliases in zip(table["protein"], table["aliases"], strict=True):
        for name in [protein, *(a for a in aliases.split(";") if a)]:
            for lookup, key in ((strict, _key(name)), (loose, _key(name, loose=True))):
                if lookup.get(key, protein) != protein:
                    raise RuntimeError(f"{_RESOURCE}: {name!r} names both {lookup[key]!r} and {protein!r}.")
                lookup[key] = protein
    return table, strict, loose


def _stripped(name: str) -> list[str]:
    """A panel name, then the same without its modality prefix and each suffix or barcode ID, in turn."""
    candidates = [str(name).strip()]
    stripped = candidates[0]
    if (bare := _PREFIX.sub("", stripped)) and bare != stripped:
        stripped = bare
        candidates.append(stripped)
    while (shorter := _BARCODE.sub("", _SUFFIX.sub("", stripped))) != stripped and shorter:
        stripped = shorter
        candidates.append(stripped)
    return candidates


def _resolve(name: str, strict: dict[str, str], loose: dict[str, str]) -> tuple[str | None, bool]:
    """The map entry of a panel name (after stripping suffixes), and whether it looks like an isotype control.

    Exact spellings (up to case, spaces and ``_``) win over spellings without ``-``/``.``, so that a
    unique-making suffix is removed ("CD4-1" → CD4) before "CD4-1" could be read as "CD41".
    """
    candidates = _stripped(name)
    candidates += [_COPY.sub("", c) for c in candidates if _COPY.search(c)]
    for lookup, loose_key in ((strict, False), (loose, True)):
        for candidate in candidates:
            if (hit := lookup.get(_key(candidate, loose=loose_key))) is not None:
                return hit, False
    return None, any(_ISOTYPE.search(_key(c, loose=True)) for c in candidates)


def _mouse_case(symbol: str) -> str:
    return symbol[:1].upper() + symbol[1:].lower()


def protein_genes(
    proteins: str | Sequence[str] | None = None,
    *,
    species: Literal["human", "mouse"] = "human",
    genes: Sequence[str] | None = None,
    errors: Literal["warn", "raise", "ignore"] = "warn",
) -> pd.DataFrame:
    """Look up the coding gene(s) of each antibody's target protein.

    The map covers the human TotalSeq antibodies of the data sets shipped or used for development
    (the 134 proteins of ``bmmc_cite_600``, the 17 of ``pbmc1k_protein_v3`` and the 87 of the dsb
    example). Each entry says how the antibody relates to its genes (``kind``):

    ``gene``
        One protein from one gene (CD19 → CD19, CD71 → TFRC).
    ``isoform``
        An isoform-specific antibody (CD45RA and CD45RO → PTPRC).
    ``complex``
        A complex: every subunit gene (CD3 → CD3E, CD3D, CD3G; HLA-DR → HLA-DRA, HLA-DRB1, HLA-DRB3/4/5).
    ``paralogs``
        The antibody binds the products of several related genes (CD16 → FCGR3A, FCGR3B).
    ``carbohydrate``, ``tcr``, ``other``, ``isotype_control``
        No coding gene: glycan epitopes (CD15, CD57), rearranged T-cell receptors (TCR, TCRVa7.2), non-antibody
        reagents (annexin V) and isotype controls.

    Names are matched case-insensitively, ignoring spaces and ``_``, by common aliases (``PD-1`` = CD279,
    ``HLA-ABC`` = HLA-A-B-C), after removing the prefixes and suffixes panels add (``ADT_``, ``_TotalSeqB``,
    ``_PROT``, ``_ADT``, ``_control``, TotalSeq barcode IDs such as ``_A0093``: ``ADT_CD19_A0093`` = CD19)
    or that make names unique (``-1``), and finally ignoring ``-``, ``.``, ``,`` and ``/`` as well
    (``HLA.DR`` = HLA-DR).
    Unmatched names whose text looks like an isotype control (``Mouse IgG1 kappa isotype``) are reported
    as such.

    Parameters
    ----------
    proteins
        Antibody names, e.g. ``mdata["prot"].var_names``; ``None`` returns the whole map.
    species
        ``"human"`` returns HGNC symbols. ``"mouse"`` returns the same symbols in mouse capitalisation
        (CD19 → Cd19). This is a change of case, not an orthologue table: it is right for most of these
        genes and wrong where the mouse orthologue has another name (HLA-DRA: H2-Ea; CD8B: Cd8b1), so pass
        ``genes`` to keep only the symbols your data has.
    genes
        Gene names to match against, e.g. ``mdata["rna"].var_names``. Symbols are matched
        case-insensitively, returned as spelled in ``genes``, and symbols not in ``genes`` are dropped.
    errors
        What to do with names the map does not know: ``"warn"`` (one warning listing them),
        ``"raise"`` (a :class:`KeyError`) or ``"ignore"``. They get ``kind="unknown"`` and no genes.

    Returns
    -------
    One row per name, in the given order (index: the names as given), with columns

    ``protein``
        The name of the map entry (missing, :func:`pandas.isna`, if unknown or an unlisted isotype control).
    ``genes``
        Tuple of gene symbols coding for the target (empty if there are none, or none in ``genes``).
    ``kind``
        One of the kinds above, or ``"unknown"``.
    ``note``
        Antibody clone specificity and other remarks.

    Examples
    --------
    >>> cmn.pp.protein_genes(["CD3_TotalSeqB", "CD45RA", "PD-1", "IgG1_control"])["genes"]
    CD3_TotalSeqB    (CD3E, CD3D, CD3G)
    CD45RA                    (PTPRC,)
    PD-1                      (PDCD1,)
    IgG1_control                    ()
    Name: genes, dtype: object
    >>> cmn.pp.protein_genes(["CD19"], species="mouse")["genes"].iloc[0]
    ('Cd19',)
    """
    if species not in ("human", "mouse"):
        raise ValueError(f"{_CALLER}: `species` must be 'human' or 'mouse', got {species!r}.")
    if errors not in ("warn", "raise", "ignore"):
        raise ValueError(f"{_CALLER}: `errors` must be 'warn', 'raise' or 'ignore', got {errors!r}.")
    table, strict, loose = _table()
    names = list(table.index) if proteins is None else [proteins] if isinstance(proteins, str) else list(proteins)
    available = None
    if genes is not None:
        if isinstance(genes, str):
            raise TypeError(f"{_CALLER}: `genes` must be a sequence of gene names, not one string.")
        available = {}
        for g in map(str, genes):
            available.setdefault(g.upper(), g)

    rows, unknown = [], []
    for name in names:
        hit, isotype = _resolve(str(name), strict, loose)
        if hit is None:
            kind = "isotype_control" if isotype else "unknown"
            if not isotype:
                unknown.append(str(name))
            rows.append({"protein": None, "genes": (), "kind": kind, "note": ""})
            continue
        entry = table.loc[hit]
        symbols = entry["genes"]
        if available is not None:
            symbols = tuple(available[s.upper()] for s in symbols if s.upper() in available)
        elif species == "mouse":
            symbols = tuple(_mouse_case(s) for s in symbols)
        rows.append({"protein": hit, "genes": symbols, "kind": entry["kind"], "note": entry["note"]})

    if unknown and errors != "ignore":
        message = (
            f"{_CALLER}: {len(unknown)} name(s) not in the protein-to-gene map: {unknown[:10]}"
            f"{' ...' if len(unknown) > 10 else ''}. They get kind 'unknown' and no genes; check the spelling, "
            "or look the target up and pass your own mapping."
        )
        if errors == "raise":
            raise KeyError(message)
        warnings.warn(message, UserWarning, stacklevel=2)
    out = pd.DataFrame(rows, index=pd.Index([str(n) for n in names], name="name"))
    return out.astype({"kind": str, "note": str})
