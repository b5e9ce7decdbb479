"""Match the antibody names of several CITE-seq panels to one vocabulary."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import pandas as pd

from crossmodalnet import _keys
from crossmodalnet._constants import DEFAULT_PROTEIN_KEY
from crossmodalnet._utils import get_modality, shared_feature_names_quiet
from crossmodalnet.pp._protein_genes import _key, _resolve, _stripped, _table

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

logger = logging.getLogger(__name__)

_CALLER = "cmn.pp.harmonize_proteins"
MATCHES = ("exact", "case", "suffix", "alias", "gene", "user", "isotype_control")
"""Values of the ``match`` column, from the most to the least literal."""


def _panel_names(panel: object, label: str, protein_key: str) -> list[str]:
    """The antibody names of one panel: a MuData's protein modality, an AnnData's or a list's names."""
    from anndata import AnnData
    from mudata import MuData

    if isinstance(panel, MuData):
        return [str(n) for n in get_modality(panel, protein_key, _CALLER, role="protein").var_names]
    if isinstance(panel, AnnData):
        return [str(n) for n in panel.var_names]
    if isinstance(panel, str | bytes) or not isinstance(panel, Sequence | pd.Index):
        raise TypeError(
            f"{_CALLER}: panel {label!r} must be a MuData, an AnnData or a sequence of protein names, "
            f"got {type(panel).__name__}."
        )
    return [str(n) for n in panel]


def _gene_lookup(table: pd.DataFrame) -> dict[str, str]:
    """Gene symbol → map entry, for genes that code for exactly one single-gene entry (TFRC → CD71)."""
    single = table[(table["kind"] == "gene") & (table["genes"].map(len) == 1)]
    counts = single["genes"].map(lambda g: g[0]).value_counts()
    return {genes[0].upper(): protein for protein, genes in single["genes"].items() if counts[genes[0]] == 1}


def _read(
    name: str, table: pd.DataFrame, strict: dict[str, str], loose: dict[str, str], by_gene: dict[str, str]
) -> dict:
    """How one panel name reads: its map entry (or ``None``), its grouping key, and whether it is an isotype."""
    entry, isotype = _resolve(name, strict, loose)
    stripped = _stripped(name)
    if entry is not None and table.loc[entry, "kind"] == "isotype_control":
        entry, isotype = None, True
    if entry is not None:
        return {"entry": entry, "group": ("entry", entry), "via_gene": False, "isotype": False}
    if isotype:
        return {"entry": None, "group": None, "via_gene": False, "isotype": True}
    if (gene_entry := next((by_gene[c.upper()] for c in stripped if c.upper() in by_gene), None)) is not None:
        return {"entry": gene_entry, "group": ("entry", gene_entry), "via_gene": True, "isotype": False}
    # not in the map: only the same spelling (up to case, spaces, ``_`` and panel suffixes) matches it
    return {"entry": None, "group": ("name", _key(stripped[-1])), "spelling": stripped[-1], "isotype": False}


def _how(name: str, harmonized: str, read: dict) -> str:
    """The ``match`` value of a name read as ``harmonized``."""
    if read.get("via_gene", False):
        return "gene"
    if name == harmonized:
        return "exact"
    if _key(name) == _key(harmonized):
        return "case"
    if any(_key(c) == _key(harmonized) for c in _stripped(name)):
        return "suffix"
    return "alias"


def harmonize_proteins(
    panels: Mapping[str, MuData | AnnData | Sequence[str]],
    *,
    synonyms: Mapping[str, str] | None = None,
    protein_key: str = DEFAULT_PROTEIN_KEY,
    inplace: bool = False,
) -> pd.DataFrame:
    """Match the antibody names of several panels to one vocabulary, and report every match.

    Panels name the same antibody differently ("CD8a", "CD8a_TotalSeqB", "PD-1" and "CD279",
    "HLA-ABC_PROT" and "HLA-A-B-C"). Each name is read through the protein-to-gene map of
    :func:`crossmodalnet.pp.protein_genes`: up to case, spaces and ``_``, after removing the prefixes and
    suffixes panels add (``ADT_``, ``_TotalSeqB``, ``_PROT``, TotalSeq barcode IDs), by the map's aliases,
    and finally by coding gene (a name that is the gene symbol of exactly one single-gene protein:
    ``TFRC`` = CD71). Names that read as the same map entry get that entry's name; names the map does not
    know get their name without panel suffixes, and match only the same spelling in another panel.

    Nothing is merged by guesswork:

    - Different map entries are never merged, even where their genes overlap: CD8 (the CD8A–CD8B
      dimer) and CD8a (CD8A), or CD45, CD45RA and CD45RO (isoforms of PTPRC), stay apart and are listed in
      each other's ``related`` column. Merge them yourself with ``synonyms`` where your clones bind the
      same protein (clone SK1, sold as "CD8", binds CD8 alpha).
    - A complex matches the same complex only ("HLA-A,B,C" = "HLA-ABC" = "HLA-A-B-C", not "HLA-A").
    - Isotype controls get no harmonised name and match nothing.
    - Two names of one panel that read as the same protein raise a :class:`ValueError` naming them.

    Parameters
    ----------
    panels
        Panel label → a MuData (its ``protein_key`` modality), an AnnData of proteins, or the antibody names
        themselves. The labels name the panels in the result and in messages.
    synonyms
        Harmonised names to merge: ``{"CD8": "CD8a"}`` reads every name that harmonises to CD8 as CD8a
        (``match="user"``). Keys and values are read like panel names, so ``"CD8_PROT"`` works too.
    protein_key
        Protein modality of MuData panels.
    inplace
        Rename the proteins of the MuData and AnnData panels to their harmonised names (isotype controls
        keep their names), keeping the names as given in ``var["cmn_panel_name"]``. Every panel must then
        be a MuData or an AnnData; nothing is renamed if any check fails.

    Returns
    -------
    One row per panel name, indexed by ``(panel, name)`` in the order given, with columns

    ``harmonized``
        The name in the common vocabulary (missing, :func:`pandas.isna`, for isotype controls).
    ``match``
        How the name reads as ``harmonized``: ``"exact"``, ``"case"`` (up to case, spaces and ``_``),
        ``"suffix"`` (after removing panel prefixes and suffixes), ``"alias"`` (an alias of the map entry,
        or ignoring ``-``, ``.``, ``,`` and ``/``), ``"gene"`` (its coding gene), ``"user"``
        (``synonyms``), or ``"isotype_control"``.
    ``protein``, ``genes``, ``kind``
        The map entry, its coding genes and its kind as in :func:`crossmodalnet.pp.protein_genes`
        (``kind="unknown"`` for names the map does not know).
    ``n_panels``
        In how many panels ``harmonized`` occurs (0 for isotype controls); 1 means no other panel has
        it.
    ``related``
        Harmonised names of the other panels whose proteins share a coding gene with this one but are
        different map entries (tuple; never merged).

    With ``inplace=True`` it also sets, for each MuData or AnnData panel:

    ``var_names``
        The harmonised names (isotype controls unchanged); a MuData is updated to its renamed modality.
    ``var["cmn_panel_name"]``
        The names as given (left as it is if the column exists, e.g. from an earlier call).

    Examples
    --------
    >>> table = cmn.pp.harmonize_proteins({"bmmc": bmmc, "pbmc": pbmc})
    >>> table.loc["pbmc", ["harmonized", "match"]].head(3)
                   harmonized   match
    name
    CD3_TotalSeqB         CD3  suffix
    CD4_TotalSeqB         CD4  suffix
    CD8a_TotalSeqB       CD8a  suffix
    >>> wide = table.dropna(subset="harmonized").reset_index().pivot(index="harmonized", columns="panel", values="name")
    >>> wide.loc["CD279"].tolist()
    ['CD279', 'PD-1_TotalSeqB']
    >>> cmn.pp.harmonize_proteins({"bmmc": bmmc, "pbmc": pbmc}, inplace=True)
    """
    if not isinstance(panels, Mapping) or not panels:
        raise TypeError(f"{_CALLER}: `panels` must be a non-empty mapping of panel label → MuData, AnnData or names.")
    from anndata import AnnData
    from mudata import MuData

    if inplace:
        immutable = [str(label) for label, p in panels.items() if not isinstance(p, MuData | AnnData)]
        if immutable:
            raise TypeError(
                f"{_CALLER}: `inplace=True` renames the proteins of MuData and AnnData panels; panel(s) "
                f"{immutable} are names only. Pass the data, or use `inplace=False` and the returned table."
            )
    names = {str(label): _panel_names(p, str(label), protein_key) for label, p in panels.items()}
    table, strict, loose = _table()
    by_gene = _gene_lookup(table)
    reads = {label: [_read(n, table, strict, loose, by_gene) for n in ns] for label, ns in names.items()}

    # one harmonised name per group: the map entry's name, or the first spelling of an unknown name
    spelling: dict[tuple[str, str], str] = {}
    for label in names:
        for read in reads[label]:
            if read["group"] is not None:
                spelling.setdefault(read["group"], read["entry"] or read["spelling"])

    def harmonize(read: dict) -> str | None:
        return None if read["group"] is None else spelling[read["group"]]

    merge: dict[str, str] = {}
    for key, value in (synonyms or {}).items():
        pair = [_read(str(x), table, strict, loose, by_gene) for x in (key, value)]
        if any(r["isotype"] for r in pair):
            raise ValueError(f"{_CALLER}: `synonyms` {key!r}: {value!r} names an isotype control; they match nothing.")
        source, target = (spelling.get(r["group"]) or r["entry"] or r["spelling"] for r in pair)
        merge[source] = target

    rows = []
    for label, ns in names.items():
        for name, read in zip(ns, reads[label], strict=True):
            harmonized = harmonize(read)
            if read["isotype"]:
                match = "isotype_control"
            elif harmonized in merge:
                harmonized, match = merge[harmonized], "user"
            else:
                match = _how(name, harmonized, read)
            entry = read["entry"]
            rows.append(
                {
                    "panel": label,
                    "name": name,
                    "harmonized": harmonized,
                    "match": match,
                    "protein": entry,
                    "genes": table.loc[entry, "genes"] if entry is not None else (),
                    "kind": table.loc[entry, "kind"]
                    if entry is not None
                    else ("isotype_control" if read["isotype"] else "unknown"),
                }
            )
    out = pd.DataFrame(rows, columns=["panel", "name", "harmonized", "match", "protein", "genes", "kind"])

    # never merge two names of one panel
    real = out[out["harmonized"].notna()]
    clash = real[real.duplicated(["panel", "harmonized"], keep=False)]
    if len(clash):
        described = "; ".join(
            f"panel {label!r}: {group['name'].tolist()} → {harmonized!r}"
            for (label, harmonized), group in clash.groupby(["panel", "harmonized"], sort=False)
        )
        raise ValueError(
            f"{_CALLER}: names of one panel read as the same protein ({described}). Nothing was merged or "
            "renamed: drop one of them (`cmn.pp.drop_proteins`) or rename it before harmonising."
        )

    panels_of = real.groupby("harmonized")["panel"].nunique()
    out["n_panels"] = [0 if pd.isna(h) else int(panels_of[h]) for h in out["harmonized"]]
    genes_of = real.groupby("harmonized")["genes"].first()
    panel_sets = real.groupby("harmonized")["panel"].agg(set)
    related = []
    for label, harmonized, genes in zip(out["panel"], out["harmonized"], out["genes"], strict=True):
        if pd.isna(harmonized) or not genes:
            related.append(())
            continue
        related.append(
            tuple(
                other
                for other, other_genes in genes_of.items()
                if other != harmonized and set(genes) & set(other_genes) and panel_sets[other] - {label}
            )
        )
    out["related"] = related
    out = out.set_index(["panel", "name"])
    out = out.astype({"match": str, "kind": str, "n_panels": int})
    _log(out, len(names))

    if inplace:
        for label, panel in panels.items():
            new = out.loc[str(label)]
            renamed = [n if pd.isna(h) else h for n, h in zip(new.index, new["harmonized"], strict=True)]
            adata = panel.mod[protein_key] if isinstance(panel, MuData) else panel
            if _keys.PANEL_NAME not in adata.var:
                adata.var[_keys.PANEL_NAME] = list(adata.var_names)
            adata.var_names = renamed
            if isinstance(panel, MuData):
                with shared_feature_names_quiet():
                    panel.update()
        logger.info("renamed the proteins of %d panel(s), names as given in var[%r]", len(panels), _keys.PANEL_NAME)
    return out


def _log(out: pd.DataFrame, n_panels: int) -> None:
    """One info line per panel: matches by kind, names no other panel has, isotype controls, related names."""
    for label, rows in out.groupby(level="panel", sort=False):
        names = rows.index.get_level_values("name")
        counts = rows["match"].value_counts()
        only_here = names[(rows["n_panels"] == 1).to_numpy()].tolist()
        logger.info(
            "%s: panel %r: %d names, %s; %d in no other panel%s; unknown to the protein map: %s",
            _CALLER,
            label,
            len(rows),
            ", ".join(f"{counts.get(m, 0)} {m}" for m in MATCHES if counts.get(m, 0)),
            len(only_here) if n_panels > 1 else 0,
            f" {only_here[:10]}" if n_panels > 1 and only_here else "",
            names[(rows["kind"] == "unknown").to_numpy()].tolist(),
        )
    pairs = sorted({(h, r) for h, rel in zip(out["harmonized"], out["related"], strict=True) for r in rel if h < r})
    if pairs:
        logger.info("%s: related but different proteins, not merged: %s", _CALLER, pairs)
