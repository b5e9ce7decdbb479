from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from crossmodalnet.model import CrossmodalNet, table_s1_search_space, tune_hyperparameters
from crossmodalnet.model._tune import _plan_keys, _resolve_arguments, _route, _train_keys


@pytest.fixture
def mdata(norm_mdata):
    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    return mdata


def test_import_does_not_need_ray():
    code = "import sys, crossmodalnet, crossmodalnet.model; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_missing_ray_names_the_extra(mdata, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'crossmodalnet-tools\[tune\]'"):
        tune_hyperparameters(mdata, num_samples=1, max_epochs=1)
    with pytest.raises(ImportError, match=r"crossmodalnet-tools\[tune\]"):
        table_s1_search_space()


@pytest.mark.parametrize(
    ("space", "kwargs", "match"),
    [
        ({"lr": 1e-3}, {"metric": "loss_train"}, "validation metric"),
        ({"lr": 1e-3}, {"metric": "mse_validation", "mode": "max"}, "does not fit"),
        ({"split_seed": 1}, {}, "cannot be searched"),
        ({"max_epochs": 5}, {}, "cannot be searched"),
        ({"not_an_argument": 1}, {}, "Unknown search-space"),
        ({"lr": 1e-3}, {"train_kwargs": {"lr": 1e-2}}, "both searched and fixed"),
        ({}, {}, "non-empty"),
    ],
)
def test_argument_checks(mdata, space, kwargs, match):
    args = {"metric": "pearson_protein_validation", "mode": None, "model_kwargs": None, "train_kwargs": {}, **kwargs}
    with pytest.raises(ValueError, match=match):
        _resolve_arguments(mdata, space, args["metric"], args["mode"], args["model_kwargs"], args["train_kwargs"])


def test_argument_checks_routing_and_registration(norm_mdata, mdata):
    with pytest.raises(TypeError, match="model_kwargs"):
        _resolve_arguments(mdata, {"lr": 1e-3}, "pearson_protein_validation", None, None, {"n_latent": 8})
    with pytest.raises(ValueError, match="setup_mudata"):
        _resolve_arguments(norm_mdata.copy(), {"lr": 1e-3}, "pearson_protein_validation", None, None, {})
    mode, setup = _resolve_arguments(mdata, {"lr": 1e-3}, "mse_validation", None, None, {})
    assert mode == "min"
    assert setup["time_key"] == "time"


def test_table_s1_search_space(mdata):
    pytest.importorskip("ray")
    space = table_s1_search_space()
    assert set(space) == {
        "use_batch_norm",
        "lr",
        "weight_decay",
        "dropout_rate",
        "n_latent",
        "n_hidden_discriminator",
        "lambda_dis",
        "gradient_penalty",
        "lr_discriminator",
        "weight_decay_discriminator",
        "learning_step",
        "lr_gradnorm",
        "gradnorm_alpha",
    }
    assert space["use_batch_norm"].categories == [True, False]
    assert space["dropout_rate"].categories == [0.0, 0.05, 0.15, 0.3]
    assert space["n_latent"].categories == [256, 512]
    assert space["n_hidden_discriminator"].categories == [128, 32]
    assert space["learning_step"].categories == [3, 5, 10]
    for key in ("weight_decay", "weight_decay_discriminator"):  # 10 ** randint over -7..-3
        np.testing.assert_allclose(space[key].categories, [1e-7, 1e-6, 1e-5, 1e-4, 1e-3])
    for key in ("lr", "lr_discriminator", "lr_gradnorm"):  # qloguniform(1e-4, 1e-1, 5e-5)
        dom = space[key]
        assert (dom.lower, dom.upper, dom.sampler.q) == (1e-4, 1e-1, 5e-5)
        assert type(dom.sampler.sampler).__name__.lstrip("_") == "LogUniform"
    for key, upper in (("lambda_dis", 2.0), ("gradient_penalty", 2.0), ("gradnorm_alpha", 3.0)):  # quniform(0, u, 0.1)
        dom = space[key]
        assert (dom.lower, dom.upper, dom.sampler.q) == (0.0, upper, 0.1)
        assert type(dom.sampler.sampler).__name__.lstrip("_") == "Uniform"
    # every key is an argument of the model or of `train`, so the default space is accepted
    assert _resolve_arguments(mdata, space, "pearson_protein_validation", None, None, {})[0] == "max"


def test_tune_small_search(mdata, tmp_path):
    # 20-27 s on 2 busy cores, nearly all Ray start-up and the workers importing scvi-tools
    ray = pytest.importorskip("ray")
    from ray import tune

    started_before = ray.is_initialized()
    space = {"n_latent": tune.choice([8, 16]), "lr": tune.qloguniform(1e-4, 1e-2, 5e-5)}
    trials = tune_hyperparameters(
        mdata,
        search_space=space,
        num_samples=2,
        max_epochs=2,
        scheduler="fifo",
        logging_dir=tmp_path,
        validation_size=0.2,
        batch_size=64,
    )
    assert len(trials) == 2
    assert trials["trial_id"].is_unique
    assert trials["error"].isna().all()
    scores = trials["pearson_protein_validation"].to_numpy(dtype=float)
    assert np.isfinite(scores).all()
    assert scores[0] >= scores[1]
    assert (trials["n_epochs"] == 2).all()
    assert set(trials["n_latent"]) <= {8, 16}
    best = trials.attrs["best_config"]
    assert best == {"n_latent": trials.loc[0, "n_latent"], "lr": trials.loc[0, "lr"]}
    assert trials.attrs["best_model_kwargs"] == {"n_latent": best["n_latent"]}
    refit = trials.attrs["best_train_kwargs"]
    assert refit["lr"] == best["lr"]
    assert (refit["max_epochs"], refit["split_seed"], refit["validation_size"]) == (2, 0, 0.2)
    assert trials.attrs["experiment_path"].startswith(str(tmp_path))
    assert not math.isnan(trials.loc[0, "mse_validation"])
    assert ray.is_initialized() == started_before  # a Ray instance the search started is shut down


def test_settings_routed_to_model_plan_and_train():
    config = {"n_latent": 8, "lr": 1e-3, "gradnorm_alpha": 1.5, "batch_size": 64}
    fixed_train = {"validation_size": 0.2, "plan_kwargs": {"weight_decay": 1e-5}}
    model_kwargs, train_kwargs = _route(config, {"input_reduction": "svd"}, fixed_train)
    assert model_kwargs == {"input_reduction": "svd", "n_latent": 8}
    assert train_kwargs == {
        "validation_size": 0.2,
        "batch_size": 64,
        "plan_kwargs": {"weight_decay": 1e-5, "lr": 1e-3, "gradnorm_alpha": 1.5},
    }
    assert fixed_train["plan_kwargs"] == {"weight_decay": 1e-5}  # the fixed arguments are not changed
    # the refit arguments name the plan settings that `train` takes by name
    _, refit = _route(config, {}, {"validation_size": 0.2}, by_name=True)
    assert refit == {"validation_size": 0.2, "batch_size": 64, "lr": 1e-3, "gradnorm_alpha": 1.5}
    # the plan's settings come from its signature, apart from the run and splitter settings of `train`
    assert _plan_keys() >= {"lr", "gradnorm_alpha", "input_group_lasso"}
    assert not _plan_keys() & _train_keys()


def test_plan_setting_fixed_in_plan_kwargs_cannot_be_searched(mdata):
    with pytest.raises(ValueError, match="both searched and fixed"):
        _resolve_arguments(mdata, {"lr": 1e-3}, "pearson_protein_validation", None, None, {"plan_kwargs": {"lr": 1e-2}})
