from __future__ import annotations

import matplotlib
import pytest

matplotlib.use("Agg")


@pytest.fixture(scope="session")
def annotated(norm_mdata, trained_model, tmp_path_factory):
    """Every ``cmn.tl`` output, written to and read back from ``.h5mu`` (plots must work on loaded data)."""
    import mudata as md
    import numpy as np

    import crossmodalnet as cmn

    mdata = norm_mdata.copy()
    cmn.tl.predict_protein(mdata, trained_model)
    cmn.tl.time_embedding(mdata, trained_model, interpolate=[2.5, 3.5])
    cmn.tl.saliency(mdata, trained_model)
    genes = np.asarray(mdata["rna"].var_names)
    sets = {f"set_{k}": list(genes[k * 10 : k * 10 + 12]) for k in range(5)}
    cmn.tl.enrichment(mdata, protein=["prot_000", "prot_001"], gene_sets=sets, permutation_num=20, n_running=3)
    path = tmp_path_factory.mktemp("pl") / "annotated.h5mu"
    mdata.write_h5mu(path)
    return md.read_h5mu(path)


@pytest.fixture(autouse=True)
def _close_figures():
    import matplotlib.pyplot as plt

    yield
    plt.close("all")
