"""Build the embedded ``bmmc_cite_600.h5mu`` from ``../shared/data/bmmc_cite_600/{rna,adt}.h5ad``.

Source: NeurIPS 2021 multimodal single-cell benchmark (GEO GSE194122), site 1 donors 1 and 2,
as subsampled in openproblems-bio/neurips2021_multimodal_viash (resources_test/common/
openproblems_bmmc_cite_starter, MIT licence). Usage::

    python scripts/build_bmmc_cite.py ../shared/data/bmmc_cite_600 src/crossmodalnet/datasets/data/bmmc_cite_600.h5mu
"""

from __future__ import annotations

import sys
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
from scipy import sparse


def main(src: str, dst: str) -> None:
    """Convert the two h5ad files in ``src`` into one compressed h5mu at ``dst``."""
    rna = ad.read_h5ad(Path(src) / "rna.h5ad")
    adt = ad.read_h5ad(Path(src) / "adt.h5ad")
    assert (rna.obs_names == adt.obs_names).all()
    for a in (rna, adt):
        a.X = sparse.csr_matrix(a.X, dtype=np.float32)
        a.layers["counts"] = sparse.csr_matrix(a.layers["counts"], dtype=np.float32)
    adt.X = adt.X.toarray()
    mdata = md.MuData({"rna": rna, "prot": adt})
    for col in ("cell_type", "batch", "is_train"):
        mdata.obs[col] = rna.obs[col].to_numpy()
    mdata.obs["iso_count"] = adt.obs["iso_count"].to_numpy()
    mdata.uns["dataset"] = {
        "name": "bmmc_cite_600",
        "source": "NeurIPS 2021 multimodal benchmark, GEO GSE194122, site 1 donors 1-2 (s1d1, s1d2); "
        "openproblems-bio/neurips2021_multimodal_viash resources_test/common/openproblems_bmmc_cite_starter (MIT)",
        "rna_X": "log-normalised (counts in layers['counts'])",
        "prot_X": "normalised ADT (counts in layers['counts']); isotype controls removed, their per-cell sum in obs['iso_count']",
    }
    mdata.write_h5mu(dst, compression="gzip")
    print(f"wrote {dst}: {Path(dst).stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main(*sys.argv[1:3])
