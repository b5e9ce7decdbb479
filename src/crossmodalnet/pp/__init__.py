"""Preprocessing: normalisation (scanpy, muon), gene harmonisation for query data, AnnData → MuData."""

from ._genes import harmonize_genes
from ._mudata import to_mudata
from ._normalize import clr, dsb, log_normalize, normalize_protein

__all__ = ["clr", "dsb", "harmonize_genes", "log_normalize", "normalize_protein", "to_mudata"]
