from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scvi.model.base import BaseModelClass

from crossmodalnet.model import CrossmodalNet


def test_overwrite_replaces_atomically(trained_model, tmp_path):
    target = tmp_path / "m"
    trained_model.save(target)
    (target / "stale.txt").write_text("old")
    trained_model.save(target, overwrite=True)
    assert not (target / "stale.txt").exists()
    assert sorted(p.name for p in target.iterdir()) == ["crossmodalnet.json", "model.pt"]
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary or backup folder left


def test_failed_save_leaves_nothing(trained_model, tmp_path, monkeypatch):
    def boom(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(BaseModelClass, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        trained_model.save(tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_previous_model(trained_model, tmp_path, monkeypatch):
    trained_model.save(tmp_path / "m")
    before = (tmp_path / "m" / "model.pt").read_bytes()
    monkeypatch.setattr(BaseModelClass, "save", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        trained_model.save(tmp_path / "m", overwrite=True)
    assert (tmp_path / "m" / "model.pt").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_load_missing_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CrossmodalNet.load(tmp_path / "nope")


def test_load_partial_dir(trained_model, tmp_path):
    trained_model.save(tmp_path / "m")
    (tmp_path / "m" / "crossmodalnet.json").unlink()
    with pytest.raises(ValueError, match="crossmodalnet.json is missing"):
        CrossmodalNet.load(tmp_path / "m")
    trained_model.save(tmp_path / "m2")
    (tmp_path / "m2" / "model.pt").unlink()
    with pytest.raises(ValueError, match="model.pt is missing"):
        CrossmodalNet.load(tmp_path / "m2")


def test_load_corrupted_file(trained_model, tmp_path):
    trained_model.save(tmp_path / "m")
    with (tmp_path / "m" / "model.pt").open("ab") as fh:
        fh.write(b"garbage")
    with pytest.raises(ValueError, match="does not match its checksum"):
        CrossmodalNet.load(tmp_path / "m")


def test_load_other_format_version(trained_model, tmp_path):
    trained_model.save(tmp_path / "m")
    path = tmp_path / "m" / "crossmodalnet.json"
    manifest = json.loads(path.read_text())
    manifest["format_version"] = 99
    path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="version 99"):
        CrossmodalNet.load(tmp_path / "m")


def test_reload_is_bit_identical_including_preprocessing_state(trained_model, norm_mdata, tmp_path):
    trained_model.save(tmp_path / "m")
    loaded = CrossmodalNet.load(tmp_path / "m", norm_mdata.copy())
    for key in ("input_mean", "input_scale", "input_scaling_fitted", "loss_weights", "initial_losses"):
        assert key in loaded.module.state_dict()
    for k, v in trained_model.module.state_dict().items():
        assert torch.equal(v, loaded.module.state_dict()[k]), k
    np.testing.assert_array_equal(loaded.get_latent_representation(), trained_model.get_latent_representation())


def test_input_standardisation_fitted_on_training_cells_only(norm_mdata, tmp_path):
    import scvi
    from scipy import sparse

    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    scvi.settings.seed = 0
    model = CrossmodalNet(mdata, n_latent=8, standardize_input=True)
    model.train(max_epochs=1, accelerator="cpu", enable_progress_bar=False)
    X = mdata["rna"].X
    X = X.toarray() if sparse.issparse(X) else np.asarray(X)
    train = X[model.train_indices]
    np.testing.assert_allclose(model.module.input_mean.numpy(), train.mean(0), rtol=1e-4, atol=1e-5)
    std = train.std(0)
    np.testing.assert_allclose(model.module.input_scale.numpy(), np.where(std > 1e-6, std, 1.0), rtol=1e-3, atol=1e-5)
    assert not np.allclose(model.module.input_mean.numpy(), X.mean(0))  # not fitted on all cells
    model.save(tmp_path / "m")
    loaded = CrossmodalNet.load(tmp_path / "m", mdata)
    assert bool(loaded.module.input_scaling_fitted)
    np.testing.assert_array_equal(loaded.module.input_mean.numpy(), model.module.input_mean.numpy())
    loaded.train(max_epochs=1, accelerator="cpu", enable_progress_bar=False)  # continued training keeps the stats
    np.testing.assert_array_equal(loaded.module.input_mean.numpy(), model.module.input_mean.numpy())


def test_saved_registry_holds_only_setup_arguments(trained_model, tmp_path):
    args = trained_model.registry_["setup_args"]
    assert set(args) == {
        "rna_key",
        "protein_key",
        "rna_layer",
        "protein_layer",
        "time_key",
        "batch_key",
        "protein_mask_layer",
    }
    trained_model.save(tmp_path / "m")
    # weights of a 60-gene, n_latent=16 model plus registry: far below the size of the data
    assert (tmp_path / "m" / "model.pt").stat().st_size < 200_000


def test_reloaded_holdout_model_predicts_held_out_time_as_before(norm_mdata, tmp_path):
    import pandas as pd
    import scvi

    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    t = np.sort(mdata.obs["time"].unique())
    scvi.settings.seed = 0
    model = CrossmodalNet(mdata, n_latent=16)
    model.train(
        max_epochs=2,
        split="holdout_time",
        holdout_time=t[1],
        batch_size=64,
        accelerator="cpu",
        enable_progress_bar=False,
    )
    held_out = model.test_indices
    assert set(mdata.obs["time"].to_numpy()[held_out]) == {t[1]}
    pred = model.predict_protein()
    emb = model.get_time_embedding(include_untrained=True)
    model.save(tmp_path / "m")
    for loaded in (CrossmodalNet.load(tmp_path / "m", norm_mdata.copy()), CrossmodalNet.load(tmp_path / "m")):
        pd.testing.assert_frame_equal(loaded.predict_protein(norm_mdata), pred, check_exact=True)
        # the held-out time point is still interpolated, not read from its never-trained embedding row
        pd.testing.assert_frame_equal(loaded.get_time_embedding(include_untrained=True), emb, check_exact=True)
        assert loaded.trained_time_codes_.tolist() == [0, 2]


def test_load_does_not_log_already_downloaded(trained_model, tmp_path):
    """Issue 14 item 11: scvi-tools' "File ... already downloaded" is not shown on every load."""
    import logging

    records = []

    class _Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    scvi_download = logging.getLogger("scvi.data._download")
    handler, level = _Keep(level=logging.DEBUG), scvi_download.level
    scvi_download.addHandler(handler)
    scvi_download.setLevel(logging.DEBUG)
    try:
        trained_model.save(tmp_path / "m")
        loaded = CrossmodalNet.load(tmp_path / "m")
        # the filter is scoped to load(): the same message from scvi elsewhere still gets through
        scvi_download.info("File x already downloaded")
    finally:
        scvi_download.removeHandler(handler)
        scvi_download.setLevel(level)
    assert loaded.is_trained_
    assert records == ["File x already downloaded"]


def test_load_with_data_shows_no_mod_names_deprecation(trained_model, tmp_path):
    """Issue 26 item 7: scvi-tools' own use of the deprecated `mdata.mod_names` is not the user's to see."""
    import warnings

    trained_model.save(tmp_path / "m")
    mdata = trained_model.adata.copy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = CrossmodalNet.load(tmp_path / "m", mdata)
    assert not [str(w.message) for w in caught if "mod_names" in str(w.message)]
    np.testing.assert_allclose(loaded.predict_protein().to_numpy(), trained_model.predict_protein().to_numpy())
    # the filter is scoped to load(): the deprecation still reaches a user who calls it
    if hasattr(type(mdata), "mod_names"):
        with pytest.warns(FutureWarning, match="mod_names"):
            _ = mdata.mod_names
