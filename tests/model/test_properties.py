"""Property-based tests: setup + one epoch + predict over random shapes, dtypes and covariate layouts."""

from __future__ import annotations

import warnings

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import sparse

from crossmodalnet.model import CrossmodalNet

LAYOUTS = ("dense", "csr", "csc")
DTYPES = (np.float32, np.float64, np.int32)


@st.composite
def cite_mudata(draw):
    n_obs = draw(st.integers(6, 40))
    n_genes = draw(st.integers(2, 15))
    n_prot = draw(st.integers(2, 6))
    layout = draw(st.sampled_from(LAYOUTS))
    dtype = draw(st.sampled_from(DTYPES))
    time_layout = draw(st.sampled_from(["none", "numeric", "string", "ordered"]))
    n_time = draw(st.integers(1, 3))
    with_batch = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    gen = np.random.default_rng(seed)
    X = gen.poisson(1.0, (n_obs, n_genes)).astype(dtype)
    if np.issubdtype(dtype, np.floating):
        X = np.log1p(X).astype(dtype)
    Y = gen.normal(size=(n_obs, n_prot))
    if layout == "csr":
        X = sparse.csr_matrix(X)
    elif layout == "csc":
        X = sparse.csc_matrix(X)
    obs_names = [f"c{i}" for i in range(n_obs)]
    rna = ad.AnnData(X, obs=pd.DataFrame(index=obs_names), var=pd.DataFrame(index=[f"g{i}" for i in range(n_genes)]))
    prot = ad.AnnData(Y, obs=pd.DataFrame(index=obs_names), var=pd.DataFrame(index=[f"p{i}" for i in range(n_prot)]))
    mdata = md.MuData({"rna": rna, "prot": prot})
    time_key = None
    t = gen.integers(0, n_time, n_obs)
    if time_layout == "numeric":
        mdata.obs["t"] = t * 2 + 1
        time_key = "t"
    elif time_layout == "string":
        mdata.obs["t"] = pd.Categorical([f"day{x}" for x in t])
        time_key = "t"
    elif time_layout == "ordered":
        cats = [f"d{x}" for x in range(n_time)][::-1]
        mdata.obs["t"] = pd.Categorical([f"d{x}" for x in t], categories=cats, ordered=True)
        time_key = "t"
    batch_key = None
    if with_batch:
        mdata.obs["b"] = pd.Categorical(gen.choice(["A", "B"], n_obs))
        batch_key = "b"
    return mdata, time_key, batch_key


@pytest.mark.slow
# derandomize: CI must be reproducible; widen max_examples locally to explore (it found the no-validation crash)
@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(cite_mudata())
def test_setup_train_predict_never_crashes(case):
    mdata, time_key, batch_key = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        CrossmodalNet.setup_mudata(mdata, time_key=time_key, batch_key=batch_key)
        model = CrossmodalNet(mdata, n_latent=4)
        model.train(max_epochs=1, batch_size=16, accelerator="cpu", enable_progress_bar=False)
    pred = model.predict_protein()
    assert pred.shape == (mdata.n_obs, mdata["prot"].n_vars)
    assert list(pred.columns) == list(mdata["prot"].var_names)
    assert list(pred.index) == list(mdata.obs_names)
    assert np.isfinite(pred.to_numpy()).all()
    z = model.get_latent_representation()
    assert z.shape == (mdata.n_obs, 4)
    emb = model.get_time_embedding()
    assert emb.shape[1] == 4
    if time_key is not None:
        assert set(emb.index) <= set(mdata.obs[time_key].astype(str))
    sal = model.get_saliency(batch_size=8)
    assert sal.shape == (mdata["rna"].n_vars, mdata["prot"].n_vars)
