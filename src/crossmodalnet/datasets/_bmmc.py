"""The embedded real CITE-seq data set."""

from __future__ import annotations

from importlib.resources import as_file, files
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mudata import MuData


def bmmc_cite() -> MuData:
    """Load 600 bone-marrow mononuclear cells with RNA and 134 surface proteins (CITE-seq), shipped with the package.

    Source: the NeurIPS 2021 multimodal single-cell benchmark (GEO GSE194122), site 1, donors 1
    and 2, as subsampled in ``openproblems-bio/neurips2021_multimodal_viash``
    (``resources_test/common/openproblems_bmmc_cite_starter``, MIT licence), converted to one
    ``.h5mu`` by ``scripts/build_bmmc_cite.py``. The data set has no time points: ``obs['batch']``
    (``s1d1`` / ``s1d2``, i.e. the donor) is the covariate that stands in for time in examples.
    With 600 cells, accuracy numbers from it are sanity checks, not benchmarks.

    Returns
    -------
    MuData with 600 cells and two modalities:

    ``rna``
        1,000 genes; ``.X`` log-normalised, ``layers['counts']`` raw counts, ``var['gene_ids']``
        Ensembl IDs.
    ``prot``
        134 proteins; ``.X`` normalised ADT, ``layers['counts']`` raw counts; isotype controls
        removed (their per-cell sum in ``obs['iso_count']``).

    ``obs`` holds ``cell_type`` (41 types), ``batch`` (``s1d1`` 311 cells, ``s1d2`` 289), ``is_train``
    and ``iso_count``; ``uns['dataset']`` records the provenance.

    Examples
    --------
    >>> import crossmodalnet as cmn
    >>> mdata = cmn.datasets.bmmc_cite()
    >>> mdata.shape
    (600, 1134)
    """
    import mudata as md

    from crossmodalnet._utils import shared_feature_names_quiet

    with as_file(files("crossmodalnet.datasets") / "data" / "bmmc_cite_600.h5mu") as path:
        with shared_feature_names_quiet():  # 40 antibodies are named after their gene
            return md.read_h5mu(path)
