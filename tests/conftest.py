from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")
    parser.addoption("--internet-tests", action="store_true", default=False, help="run tests that need the network")


def pytest_collection_modifyitems(config, items):
    import torch

    skip_slow = pytest.mark.skip(reason="slow: pass --runslow to run")
    skip_net = pytest.mark.skip(reason="needs internet: pass --internet-tests to run")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "internet" in item.keywords and not config.getoption("--internet-tests"):
            item.add_marker(skip_net)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _seed():
    import scvi
    import torch

    import crossmodalnet as cmn

    scvi.settings.seed = 0
    torch.manual_seed(0)
    yield
    # a test (or a module fixture) that sets the package seed does not change the tests after it
    cmn.settings.seed = None


class CountingRows:
    """A matrix that counts the rows read from it by row positions (as a backed matrix is read from its file)."""

    def __init__(self, X):
        self.X, self.shape, self.rows_read = X, X.shape, 0

    def __getitem__(self, rows):
        self.rows_read += np.arange(self.shape[0])[rows].size
        return self.X[rows]


@pytest.fixture
def counting_rows():
    """:class:`CountingRows`: wrap a matrix to count how many of its rows a function reads."""
    return CountingRows


@pytest.fixture(scope="session")
def raw_mdata():
    """Small offline CITE-seq MuData with raw counts, 3 time points and 2 batches."""
    import crossmodalnet as cmn

    return cmn.datasets.synthetic_cite(n_obs=200, n_genes=60, n_proteins=8, n_time_points=3, n_batches=2, rng=0)


@pytest.fixture(scope="session")
def norm_mdata(raw_mdata):
    """``raw_mdata`` with log-normalised RNA and CLR proteins (do not mutate: take a copy)."""
    import crossmodalnet as cmn

    mdata = raw_mdata.copy()
    cmn.pp.log_normalize(mdata)
    cmn.pp.clr(mdata)
    return mdata


@pytest.fixture(scope="session")
def trained_model(norm_mdata):
    """A CrossmodalNet (paper preset) trained for a few epochs on a copy of ``norm_mdata`` (CPU).

    The paper preset: with the default linear path, a few epochs on 200 cells can end at the ridge-only
    start, where the time embedding and MLP2 do not affect predictions. The default preset is covered
    by ``tests/model/test_linear_path.py``.
    """
    import scvi

    from crossmodalnet.model import CrossmodalNet

    scvi.settings.seed = 0
    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    model = CrossmodalNet(mdata, preset="paper", n_latent=16)
    model.train(max_epochs=5, batch_size=64, accelerator="cpu", enable_progress_bar=False)
    return model


@pytest.fixture(autouse=True)
def _crossmodalnet_logs_reach_caplog():
    """The "crossmodalnet" logger does not propagate (it has its own handler); let pytest's caplog see it."""
    import logging

    import crossmodalnet  # noqa: F401  (installs the handler)

    log = logging.getLogger("crossmodalnet")
    before = log.propagate
    log.propagate = True
    yield
    log.propagate = before


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="session")
def load_benchmark():
    """A loader of the scripts in ``benchmarks/``: ``load_benchmark("levers")`` imports ``levers.py`` as a module."""

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"{name}_script", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
