from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crossmodalnet._metrics import pearson_per_protein
from crossmodalnet.benchmark import METHODS, METRICS, SETTINGS, make_method, run_benchmark
from crossmodalnet.benchmark._methods import RidgeMethod, clr_rows, method_display_name

DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data"
ARRAY_METHODS = [k for k, (cls, _) in METHODS.items() if not cls.transductive]


@pytest.fixture(scope="module")
def toy_linear():
    """A linear map from 30 'genes' to 6 'proteins' plus a time shift, 3 time points."""
    rng = np.random.default_rng(0)
    n, p, q = 300, 30, 6
    X = rng.normal(size=(n, p)).astype(np.float32)
    W = rng.normal(size=(p, q)).astype(np.float32)
    time = np.repeat(np.array([2, 3, 4], dtype=object), n // 3)
    shift = {2: -0.5, 3: 0.0, 4: 0.5}
    Y = (X @ W + np.array([shift[t] for t in time])[:, None] + 0.3 * rng.normal(size=(n, q))).astype(np.float32)
    idx = rng.permutation(n)
    tr, va, te = idx[:200], idx[200:240], idx[240:]
    return X, Y, time, tr, va, te


def test_ridge_recovers_linear_map(toy_linear):
    X, Y, time, tr, va, te = toy_linear
    model = RidgeMethod(seed=0).fit(X[tr], Y[tr], X[va], Y[va], time[tr], time[va])
    pred = model.predict(X[te], time[te])
    assert pred.shape == Y[te].shape
    assert np.nanmean(pearson_per_protein(pred, Y[te])) > 0.9
    assert model.info["alpha"] in (0.1, 1.0, 10.0, 100.0, 1_000.0, 10_000.0)


@pytest.mark.parametrize("key", ARRAY_METHODS)
def test_method_protocol(toy_linear, key):
    X, Y, time, tr, va, te = toy_linear
    method = make_method(key, seed=0, quick=True, threads=1, max_epochs=3)
    assert method.fit(X[tr], Y[tr], X[va], Y[va], time[tr], time[va]) is method
    pred = method.predict(X[te], time[te])
    assert pred.shape == (te.size, Y.shape[1])
    assert np.isfinite(pred).all()


def test_heldout_time_gets_all_zero_training_column(toy_linear):
    X, Y, time, tr, va, te = toy_linear
    method = RidgeMethod(seed=0, quick=True)
    method.time_categories = [2, 3, 4]
    keep = time[tr] != 3
    method.fit(X[tr][keep], Y[tr][keep], X[va], Y[va], time[tr][keep], time[va])
    onehot = method._onehot(time[tr][keep])
    assert onehot.shape[1] == 3
    assert onehot[:, 1].sum() == 0  # the held-out point's column carries nothing in training
    assert method._onehot(np.array([3], dtype=object)).tolist() == [[0.0, 1.0, 0.0]]


def test_clr_rows_matches_muon():
    import anndata as ad
    import muon as mu

    rng = np.random.default_rng(1)
    counts = rng.poisson(20, size=(10, 7)).astype(np.float32)
    adata = ad.AnnData(counts.copy())
    mu.prot.pp.clr(adata, axis=1)
    np.testing.assert_allclose(clr_rows(counts), np.asarray(adata.X), rtol=1e-5, atol=1e-5)


def _check_outputs(out, results: pd.DataFrame, methods: list[str], settings: list[str]):
    for name in ("results.csv", "per_protein.csv", "per_cell.csv", "results.md", "per_protein_pearson.png"):
        assert (out / name).is_file(), name
    machine = json.loads((out / "machine.json").read_text())
    assert machine["threads"] >= 1
    assert "torch" in machine["versions"]
    assert machine["command"].startswith("crossmodalnet benchmark")
    md = (out / "results.md").read_text()
    for header in ("per-protein r", "per-cell r", "MSE"):
        assert header in md
    names = [method_display_name(k) for k in methods]
    for name in names:
        assert f"| {name} |" in md, name
    disk = pd.read_csv(out / "results.csv")
    assert len(disk) == len(results)
    for setting in settings:
        sub = results[results["setting"] == setting]
        assert sorted(sub["method"]) == sorted(names)
        assert (sub["status"] == "ok").all(), sub.loc[sub["status"] != "ok", ["method", "status"]]
        for metric in METRICS:
            values = sub[metric]
            if metric == "pearson_protein" and setting == "heldout_time":
                # one time point in the test set: the per-time mean is a constant, its r undefined
                values = sub.loc[sub["method"] != "per-time mean", metric]
            assert np.isfinite(values).all(), (setting, metric)
        assert (sub["fit_seconds"] >= 0).all()
        assert (sub["predict_cells_per_s"] > 0).all()
    per_protein = pd.read_csv(out / "per_protein.csv")
    assert set(per_protein["method"]) == set(names)
    assert {"protein", "pearson", "mse"} <= set(per_protein.columns)


def test_run_benchmark_quick(tmp_path):
    out = tmp_path / "quick"
    # one thread: the smoke test must stay fast on a busy 2-core CI runner
    results = run_benchmark(data="synthetic", quick=True, out=out, threads=1)
    _check_outputs(out, results, list(METHODS), list(SETTINGS))
    assert set(results["dataset"]) == {"synthetic_quick"}
    assert set(METRICS) <= set(results.columns)
    ok = results[results["status"] == "ok"]
    assert (ok["n_train"] + ok["n_val"] + ok["n_test"] == ok["n_cells"]).all()


def test_cli_quick_with_speed(tmp_path):
    from crossmodalnet.__main__ import main

    out = tmp_path / "cli"
    methods = ["per_time_mean", "ridge"]
    rc = main(
        [
            "-q",
            "benchmark",
            "--quick",
            "--data",
            "synthetic",
            "--methods",
            ",".join(methods),
            "--speed",
            "--threads",
            "1",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    results = pd.read_csv(out / "results.csv")
    _check_outputs(out, results, methods, list(SETTINGS))
    md = (out / "results.md").read_text()
    assert "## Speed" in md
    iso = results[results["isolated_process"].astype(bool)]
    assert len(iso) == len(methods)  # in-distribution runs of each method, each in its own process
    assert (iso["setting"] == "in_distribution").all()
    assert (iso["peak_rss_mb"] > 0).all()


def test_small_data_recipe_method(toy_linear):
    X, Y, time, tr, va, te = toy_linear
    method = make_method("crossmodalnet_small_data", seed=0, quick=True, threads=1, max_epochs=3)
    method.fit(X[tr], Y[tr], X[va], Y[va], time[tr], time[va])
    assert method.name == method_display_name("crossmodalnet_small_data") == "CrossmodalNet (small-data recipe)"
    assert method_display_name("crossmodalnet") == "CrossmodalNet"
    assert method.info["small_data_recipe"] is True
    assert method.model_.module.standardize_protein
    assert "input_group_lasso_train" in method.model_.history


def test_preset_methods(toy_linear):
    X, Y, time, tr, va, te = toy_linear
    paper = make_method("crossmodalnet_paper", seed=0, quick=True, threads=1, max_epochs=2)
    paper.fit(X[tr], Y[tr], X[va], Y[va], time[tr], time[va])
    assert paper.name == method_display_name("crossmodalnet_paper") == "CrossmodalNet (paper preset)"
    assert paper.model_.preset == "paper"
    assert not paper.model_.module.linear_path
    default = make_method("crossmodalnet", seed=0, quick=True, threads=1, max_epochs=2)
    default.fit(X[tr], Y[tr], X[va], Y[va], time[tr], time[va])
    assert default.info["preset"] == "default"
    assert default.model_.module.linear_path
    # the recipe row stays the paper's model with the recipe options
    assert METHODS["crossmodalnet_small_data"][1]["preset"] == "paper"
    # on a linear toy problem the default model is at least as good as its ridge start on validation
    score = default.model_.split_["best_pearson_protein_validation"]
    assert np.isfinite(score)
    assert score > 0.5


def test_real_data_needs_an_explicit_folder(tmp_path, capsys):
    from crossmodalnet.__main__ import main
    from crossmodalnet.benchmark import load_dataset

    with pytest.raises(ValueError, match=r"need `data_dir` \(CLI: `--data-dir`\).*pbmc1k_protein_v3/"):
        load_dataset("pbmc")
    with pytest.raises(FileNotFoundError, match="bmmc_cite_600/rna.h5ad"):
        load_dataset("bmmc", data_dir=tmp_path)
    out = tmp_path / "cli"
    args = ["-q", "benchmark", "--quick", "--data", "synthetic,pbmc", "--methods", "ridge", "--out", str(out)]
    assert main(args) == 2
    assert "`--data-dir`" in capsys.readouterr().err
    assert main([*args, "--data-dir", str(tmp_path / "nothing")]) == 2
    assert "lacks the files" in capsys.readouterr().err
    assert not out.exists()  # checked before any work or output


def test_missing_optional_package_names_the_extra(tmp_path, monkeypatch):
    import sys

    from crossmodalnet.benchmark import make_method

    monkeypatch.setitem(sys.modules, "lightgbm", None)  # makes `import lightgbm` raise ImportError
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "lightgbm" else object())
    with pytest.raises(ImportError, match=r"lightgbm \(for lightgbm\).*crossmodalnet-tools\[benchmark\]"):
        run_benchmark(data="synthetic", quick=True, methods="ridge,lightgbm", out=tmp_path / "out", threads=1)
    assert not (tmp_path / "out").exists()
    X = np.zeros((6, 2), dtype=np.float32)
    t = np.zeros(6, dtype=object)
    with pytest.raises(ImportError, match=r"crossmodalnet-tools\[benchmark\]"):
        make_method("lightgbm", quick=True, threads=1).fit(X, X, X, X, t, t)


def test_programs_and_dyngen_loaders():
    from crossmodalnet.benchmark import load_dataset

    data = load_dataset("programs:quick", seed=0)
    assert data.name == "synthetic_programs_quick"
    assert data.extra["structure"] == "programs"
    assert data.X.shape == (240, 120)
    assert data.Y.shape == (240, 8)
    with pytest.raises(ValueError, match="Unknown data set"):
        load_dataset("nonsense")
    if not (DATA_DIR / "dyngen_bifurcating_200").is_dir():
        pytest.skip("../shared/data/dyngen_bifurcating_200 is not beside the repository")
    dyn = load_dataset("dyngen", data_dir=DATA_DIR)
    assert dyn.X.shape == (200, 150)
    assert dyn.Y.shape == (200, 150)
    assert dyn.time_categories == [60, 180, 300, 420]
    assert dyn.holdout == 300
    assert np.isfinite(dyn.Y).all()
