"""cmn.pl.calibration: reads the intervals written by tl.predict_protein(uncertainty=True)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

import crossmodalnet as cmn


@pytest.fixture(scope="module")
def with_intervals(norm_mdata, tmp_path_factory):
    """Predictions with intervals on the model's own data (test cells scored), read back from ``.h5mu``."""
    import mudata as md
    import scvi

    from crossmodalnet.model import CrossmodalNet

    scvi.settings.seed = 0
    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    model = CrossmodalNet(mdata, n_latent=16)
    model.train(max_epochs=10, train_size=0.5, validation_size=0.25, accelerator="cpu", enable_progress_bar=False)
    cmn.tl.predict_protein(mdata, model, uncertainty=True)
    path = tmp_path_factory.mktemp("cal") / "cal.h5mu"
    mdata.write_h5mu(path)
    return md.read_h5mu(path), model


def test_calibration_returns_figure(with_intervals):
    mdata, model = with_intervals
    fig = cmn.pl.calibration(mdata, return_fig=True)
    assert isinstance(fig, Figure)
    cover_ax, error_ax = fig.axes
    levels, observed = cover_ax.lines[1].get_data()
    np.testing.assert_allclose(levels, mdata.uns["cmn_protein"]["uncertainty"]["levels"])
    # the 0.9 point is the coverage recorded by the writer on the same (test) cells
    at_90 = observed[np.flatnonzero(np.isclose(levels, 0.9))[0]]
    assert at_90 == pytest.approx(mdata.uns["cmn_protein"]["uncertainty"]["coverage"])
    assert np.all(np.diff(observed) >= 0)
    assert len(error_ax.lines[0].get_xdata()) == 10


def test_calibration_one_panel_into_ax(with_intervals, tmp_path):
    mdata, _ = with_intervals
    fig, ax = plt.subplots()
    assert cmn.pl.calibration(mdata, panels="error", proteins="prot_000", ax=ax, save=tmp_path / "c.png") is None
    assert ax.has_data()
    assert (tmp_path / "c.png").is_file()
    with pytest.raises(ValueError, match="one panel"):
        cmn.pl.calibration(mdata, ax=ax)


def test_calibration_errors(with_intervals, norm_mdata, trained_model):
    mdata, _ = with_intervals
    with pytest.raises(ValueError, match="`panels`"):
        cmn.pl.calibration(mdata, panels="both_ways")
    with pytest.raises(ValueError, match="`n_bins`"):
        cmn.pl.calibration(mdata, n_bins=1)
    plain = norm_mdata.copy()
    cmn.tl.predict_protein(plain, trained_model)
    with pytest.raises(KeyError, match="uncertainty=True"):
        cmn.pl.calibration(plain)
    with pytest.raises(KeyError, match="cmn.tl.predict_protein"):
        cmn.pl.calibration(norm_mdata)
