"""Preprocessing: normalisation (scanpy, muon), gene harmonisation for query data, protein names across panels, AnnData → MuData, the protein-to-gene map."""

from ._genes import harmonize_genes
from ._harmonize_proteins import harmonize_proteins
from ._mudata import drop_proteins, to_mudata
from ._normalize import clr, dsb, log_normalize, normalize_protein
from ._protein_genes import protein_genes

__all__ = [
    "clr",
    "drop_proteins",
    "dsb",
    "harmonize_genes",
    "harmonize_proteins",
    "log_normalize",
    "normalize_protein",
    "protein_genes",
    "to_mudata",
]
