from __future__ import annotations

import subprocess
import sys
import warnings

import mudata as md
import numpy as np
import pandas as pd
import pytest

import crossmodalnet as cmn
from crossmodalnet.__main__ import main


@pytest.fixture(scope="module")
def h5mu(tmp_path_factory):
    mdata = cmn.datasets.synthetic_cite(n_obs=150, n_genes=40, n_proteins=6, n_time_points=3, rng=0)
    cmn.pp.log_normalize(mdata)
    cmn.pp.clr(mdata)
    path = tmp_path_factory.mktemp("cli") / "cite.h5mu"
    mdata.write_h5mu(path)
    return path


def test_help_does_not_import_scvi():
    code = "import sys; from crossmodalnet.__main__ import build_parser; build_parser(); print('scvi' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0


def test_train_then_predict(h5mu, tmp_path, capsys):
    model_dir = tmp_path / "model"
    assert (
        main(
            [
                "-q",
                "train",
                str(h5mu),
                "--out",
                str(model_dir),
                "--time-key",
                "time",
                "--n-latent",
                "8",
                "--max-epochs",
                "2",
            ]
        )
        == 0
    )
    assert (model_dir / "model.pt").is_file()
    assert (model_dir / "crossmodalnet.json").is_file()
    out_csv = tmp_path / "pred.csv"
    assert main(["-q", "predict", str(model_dir), str(h5mu), "--out", str(out_csv)]) == 0
    pred = pd.read_csv(out_csv, index_col=0)
    assert pred.shape == (150, 6)
    # RNA-only .h5ad input with a shuffled subset of the genes; --time for cells without a time column
    mdata = md.read_h5mu(h5mu)
    rna = mdata["rna"][:, mdata["rna"].var_names[::-1][:35]].copy()
    rna.obs = rna.obs.drop(columns=["time"])
    rna.write_h5ad(tmp_path / "query.h5ad")
    out_h5mu = tmp_path / "query_pred.h5mu"
    assert (
        main(["-q", "predict", str(model_dir), str(tmp_path / "query.h5ad"), "--out", str(out_h5mu), "--time", "3"])
        == 0
    )
    written = md.read_h5mu(out_h5mu)
    assert written.obsm["cmn_protein"].shape == (150, 6)
    assert "coverage" in capsys.readouterr().out


def test_train_small_data_recipe(h5mu, tmp_path):
    model_dir = tmp_path / "recipe"
    args = ["-q", "train", str(h5mu), "--out", str(model_dir), "--time-key", "time", "--n-latent", "8"]
    args += ["--max-epochs", "2", "--standardize-protein", "--input-group-lasso", "1e-4", "--patience", "50"]
    assert main(args) == 0
    model = cmn.model.CrossmodalNet.load(str(model_dir))
    assert model.module.standardize_protein
    assert bool(model.module.protein_scaling_fitted)
    assert "input_group_lasso_train" in model.history


def test_train_min_delta(h5mu, tmp_path, monkeypatch):
    given = []
    original = cmn.model.CrossmodalNet.train

    def spy(self, *args, **kwargs):
        given.append(kwargs["early_stopping_min_delta"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cmn.model.CrossmodalNet, "train", spy)
    args = ["-q", "train", str(h5mu), "--time-key", "time", "--n-latent", "8", "--patience", "1"]
    # no gain in validation r reaches 1: the first epoch sets the best and one more ends training (patience 1)
    assert main([*args, "--out", str(tmp_path / "m1"), "--max-epochs", "6", "--min-delta", "1"]) == 0
    model = cmn.model.CrossmodalNet.load(str(tmp_path / "m1"))
    assert len(model.history["pearson_protein_validation"]) == 2
    # without the option, the preset's minimum applies
    assert main([*args, "--out", str(tmp_path / "m0"), "--max-epochs", "1"]) == 0
    assert given == [1.0, None]


def test_cli_errors(h5mu, tmp_path, capsys):
    assert main(["-q", "train", str(tmp_path / "missing.h5mu"), "--out", str(tmp_path / "m")]) == 2
    assert "input file not found" in capsys.readouterr().err
    assert main(["-q", "train", str(h5mu), "--out", str(tmp_path / "m"), "--time-key", "day"]) == 2
    assert "`time_key='day'` is not a column" in capsys.readouterr().err
    assert main(["-q", "predict", str(tmp_path / "no_model"), str(h5mu), "--out", str(tmp_path / "p.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_demo_writes_predictions_metrics_and_plots(tmp_path):
    out = tmp_path / "demo"
    with warnings.catch_warnings():  # BMMC's antibodies named after their gene: mudata's warning is kept out
        warnings.filterwarnings("error", message="var_names are not unique")
        assert main(["-q", "demo", "--out", str(out), "--max-epochs", "1", "--n-latent", "8"]) == 0
    for name in (
        "predicted_proteins.csv",
        "metrics.csv",
        "per_protein_test.csv",
        "predicted_vs_observed.png",
        "training_history.png",
        "saliency_top_genes.png",
    ):
        assert (out / name).is_file(), name
    metrics = pd.read_csv(out / "metrics.csv")
    assert {"pearson_protein", "pearson_cell", "mse"} <= set(metrics.columns)
    assert metrics["n_test_cells"].iloc[0] == 90
    assert metrics["epochs"].iloc[0] == 1
    assert np.isfinite(metrics[["pearson_protein", "pearson_cell", "mse"]].to_numpy()).all()
    pred = pd.read_csv(out / "predicted_proteins.csv", index_col=0)
    assert pred.shape == (600, 134)
    assert np.isfinite(pred.to_numpy()).all()
    assert (out / "model" / "crossmodalnet.json").is_file()


def test_cli_train_normalises_reports_test_metrics_and_predict_takes_batch(tmp_path, capfd):
    """Issue 14 item 5: normalisation options, test metrics after train, --batch on predict, a quiet -q."""
    raw = cmn.datasets.synthetic_cite(n_obs=150, n_genes=40, n_proteins=6, n_time_points=2, n_batches=2, rng=1)
    path = tmp_path / "raw.h5mu"
    raw.write_h5mu(path)
    model_dir = tmp_path / "model"
    args = ["-q", "train", str(path), "--out", str(model_dir), "--time-key", "time", "--batch-key", "batch"]
    args += ["--n-latent", "8", "--max-epochs", "2", "--normalize-rna", "--normalize-protein", "clr"]
    capfd.readouterr()
    assert main(args) == 0
    out = capfd.readouterr()
    assert "test cells: Pearson per protein" in out.out
    assert "GPU available" not in out.err + out.out  # -q: no Lightning lines
    assert "Seed set" not in out.err + out.out
    model = cmn.model.CrossmodalNet.load(str(model_dir))
    assert model.rna_normalization["method"] == "log1p_normalize_total"

    # a query without the batch column: --batch picks one trained batch for every cell
    query = cmn.pp.to_mudata(raw["rna"].copy())
    query.obs["time"] = raw.obs["time"].to_numpy()
    qpath = tmp_path / "query.h5mu"
    query.write_h5mu(qpath)
    batch = str(model.batch_categories[1])
    assert main(["-q", "predict", str(model_dir), str(qpath), "--out", str(tmp_path / "p.csv"), "--batch", batch]) == 0
    pred = pd.read_csv(tmp_path / "p.csv", index_col=0)
    normalised = cmn.pp.log_normalize(query, copy=True)  # the raw query is normalised as the model's RNA was
    want = model.predict_protein(normalised, batch=batch)
    assert pred.shape == (150, 6)
    assert abs(pred.to_numpy() - want.to_numpy()).max() < 1e-4
    assert main(["-q", "predict", str(model_dir), str(qpath), "--out", str(tmp_path / "q.csv"), "--batch", "nope"]) == 2
    assert "Unknown batch category 'nope'" in capfd.readouterr().err


def test_cli_reports_input_errors_but_lets_bugs_raise(h5mu, tmp_path, monkeypatch, capsys):
    from crossmodalnet.model import CrossmodalNet

    def broken(*args, **kwargs):
        raise TypeError("a bug inside the package")

    args = ["-q", "predict", str(tmp_path / "model"), str(h5mu), "--out", str(tmp_path / "p.csv")]
    monkeypatch.setattr(CrossmodalNet, "load", classmethod(lambda cls, *a, **k: broken()))
    with pytest.raises(TypeError, match="a bug inside the package"):
        main(args)
    monkeypatch.setattr(
        CrossmodalNet, "load", classmethod(lambda cls, *a, **k: (_ for _ in ()).throw(ValueError("bad input")))
    )
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == "crossmodalnet predict: error: ValueError: bad input"


def test_predict_on_a_raw_count_h5mu_scores_on_the_models_scale(tmp_path):
    """Issue 26 item 3: `crossmodalnet predict` on raw ADT counts scores after the model's CLR, not raw counts."""
    norm = cmn.datasets.synthetic_cite(n_obs=150, n_genes=40, n_proteins=6, n_time_points=3, rng=0)
    cmn.pp.log_normalize(norm)
    cmn.pp.clr(norm)
    raw = norm.copy()  # the same RNA; the proteins as raw ADT counts, as a file from the sequencer has them
    raw["prot"].X = raw["prot"].layers.pop("counts")
    del raw["prot"].uns["cmn_preprocessing"]
    paths = {"raw": tmp_path / "raw.h5mu", "norm": tmp_path / "norm.h5mu"}
    raw.write_h5mu(paths["raw"])
    norm.write_h5mu(paths["norm"])
    model_dir = tmp_path / "model"
    args = ["-q", "train", str(paths["norm"]), "--out", str(model_dir), "--time-key", "time", "--max-epochs", "2"]
    assert main([*args, "--n-latent", "8"]) == 0
    metrics = {}
    for name, path in paths.items():
        out = tmp_path / f"pred_{name}.h5mu"
        assert main(["-q", "predict", str(model_dir), str(path), "--out", str(out)]) == 0
        metrics[name] = md.read_h5mu(out).uns["cmn_protein"]["metrics"]
    assert metrics["raw"]["mse"] == pytest.approx(metrics["norm"]["mse"], rel=1e-5)
    assert metrics["raw"]["pearson_protein"] == pytest.approx(metrics["norm"]["pearson_protein"], rel=1e-5)
    assert metrics["norm"]["mse"] < 10


@pytest.fixture(scope="module")
def saved_model(h5mu, tmp_path_factory):
    import scvi

    from crossmodalnet.model import CrossmodalNet

    mdata = md.read_h5mu(h5mu)
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    scvi.settings.seed = 0
    model = CrossmodalNet(mdata, n_latent=8)
    model.train(max_epochs=1, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False)
    path = tmp_path_factory.mktemp("cli_model") / "model"
    model.save(path)
    return path


def test_predict_streams_to_zarr_and_h5ad(h5mu, saved_model, tmp_path, capsys):
    """`--out PRED.zarr` / `PRED.h5ad`: an AnnData of cells × proteins, equal to the CSV of the in-memory path."""
    import anndata as ad

    csv = tmp_path / "pred.csv"
    assert main(["-q", "predict", str(saved_model), str(h5mu), "--out", str(csv)]) == 0
    want = pd.read_csv(csv, index_col=0)
    # an RNA-only .h5ad (read backed) and the CITE-seq .h5mu (read backed)
    rna = md.read_h5mu(h5mu)["rna"]
    rna.obs["time"] = md.read_h5mu(h5mu).obs["time"].to_numpy()
    rna.write_h5ad(tmp_path / "atlas.h5ad")
    for source in (h5mu, tmp_path / "atlas.h5ad"):
        for suffix in (".zarr", ".h5ad"):
            out = tmp_path / f"pred_{source.stem}{suffix}"
            assert main(["-q", "predict", str(saved_model), str(source), "--out", str(out), "--batch-size", "64"]) == 0
            got = ad.read_zarr(out) if suffix == ".zarr" else ad.read_h5ad(out)
            assert got.shape == want.shape == (150, 6)
            assert list(got.obs_names) == [str(c) for c in want.index]
            assert list(got.var_names) == list(want.columns)
            np.testing.assert_allclose(got.X, want.to_numpy(), rtol=1e-5, atol=1e-5)
            printed = capsys.readouterr().out
            assert f"predicted 6 proteins for 150 cells; gene coverage 100.0%; wrote {out}" in printed
            # an .h5ad atlas goes file to file (cmn.tl.predict_atlas), an .h5mu through the backed MuData
            assert ("chunk_size" in got.uns["cmn_protein"]["params"]) == (source.suffix == ".h5ad")
    # an existing store needs --overwrite
    out = tmp_path / f"pred_{h5mu.stem}.zarr"
    assert main(["-q", "predict", str(saved_model), str(h5mu), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["-q", "predict", str(saved_model), str(h5mu), "--out", str(out), "--overwrite"]) == 0


@pytest.mark.parametrize("name", ["pred.txt", "pred.parquet", "pred"])
def test_predict_refuses_unknown_output_extension(h5mu, saved_model, tmp_path, capsys, name):
    assert main(["-q", "predict", str(saved_model), str(h5mu), "--out", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert f"unsupported output {name}" in err
    assert ".zarr" in err
    assert ".h5ad" in err
    assert not (tmp_path / name).exists()


def test_predict_uncertainty_from_a_model_trained_on_the_cli(h5mu, saved_model, tmp_path, capsys):
    """`crossmodalnet train` saves the calibration; `predict --uncertainty LEVEL` writes intervals from it."""
    import anndata as ad

    model_dir = tmp_path / "model"
    args = ["-q", "train", str(h5mu), "--out", str(model_dir), "--time-key", "time", "--n-latent", "8"]
    assert main([*args, "--max-epochs", "2"]) == 0
    rna = md.read_h5mu(h5mu)["rna"]
    rna.obs["time"] = md.read_h5mu(h5mu).obs["time"].to_numpy()
    rna.write_h5ad(tmp_path / "atlas.h5ad")
    atlas = str(tmp_path / "atlas.h5ad")
    store, h5mu_out = tmp_path / "pred.zarr", tmp_path / "pred.h5mu"
    assert main(["-q", "predict", str(model_dir), atlas, "--out", str(store), "--uncertainty", "0.8"]) == 0
    assert main(["-q", "predict", str(model_dir), str(h5mu), "--out", str(h5mu_out), "--uncertainty", "0.8"]) == 0
    got, mem = ad.read_zarr(store), md.read_h5mu(h5mu_out)
    assert sorted(k for k in got.layers.keys() if k is not None) == ["lower", "std", "upper"]
    assert got.uns["cmn_protein"]["uncertainty"]["level"] == 0.8
    assert mem.uns["cmn_protein"]["uncertainty"]["level"] == 0.8
    # one block: the file's intervals are the in-memory ones
    np.testing.assert_array_equal(got.layers["upper"], mem.obsm["cmn_protein_upper"].to_numpy(np.float32))
    assert (got.layers["upper"] > got.X).all()
    capsys.readouterr()
    # refused before anything is written
    refusals = {
        "between 0 and 1": [atlas, "--out", str(tmp_path / "a.zarr"), "--uncertainty", "1.5"],
        "not a .csv": [atlas, "--out", str(tmp_path / "a.csv"), "--uncertainty", "0.9"],
        "write the RNA modality to an .h5ad": [str(h5mu), "--out", str(tmp_path / "a.zarr"), "--uncertainty", "0.9"],
    }
    for message, rest in refusals.items():
        assert main(["-q", "predict", str(model_dir), *rest]) == 2
        assert message in capsys.readouterr().err
    # a model saved without its calibration (the fixture saves it right after training)
    assert (
        main(["-q", "predict", str(saved_model), atlas, "--out", str(tmp_path / "a.zarr"), "--uncertainty", "0.9"]) == 2
    )
    assert "needs a calibrated model" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atlas.h5ad", "model", "pred.h5mu", "pred.zarr"]
