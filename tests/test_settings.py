"""Issue 14 item 10: crossmodalnet's own messages shown by default; third-party noise it triggers kept out."""

from __future__ import annotations

import logging
import warnings

import pytest

import crossmodalnet as cmn


@pytest.fixture
def verbosity():
    before = cmn.settings.verbosity
    yield
    cmn.settings.verbosity = before


def test_verbosity_levels(verbosity, capfd):
    log = logging.getLogger("crossmodalnet.test")
    assert cmn.settings.verbosity == 2
    assert logging.getLogger("crossmodalnet").level == logging.INFO
    log.propagate = True
    logging.getLogger("crossmodalnet").propagate = False  # as outside the test suite: own handler only
    log.info("a package message")
    assert capfd.readouterr().err == "a package message\n"
    cmn.settings.verbosity = "warning"
    assert cmn.settings.verbosity == 1
    log.info("hidden")
    log.warning("shown")
    assert capfd.readouterr().err == "shown\n"
    with pytest.raises(ValueError, match="`verbosity` must be 0-3"):
        cmn.settings.verbosity = "loud"
    assert cmn.settings.verbosity == 1


def _train(mdata, **kwargs):
    import scvi

    from crossmodalnet.model import CrossmodalNet

    CrossmodalNet.setup_mudata(mdata, time_key="time")
    scvi.settings.seed = 0
    model = CrossmodalNet(mdata, n_latent=8)
    model.train(max_epochs=2, batch_size=64, accelerator="cpu", enable_progress_bar=False, **kwargs)
    return model


def test_training_keeps_third_party_noise_out(norm_mdata, verbosity, caplog):
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        _train(norm_mdata.copy())
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "LeafSpec" in m or "logging interval" in m], messages
    assert "GPU available" not in caplog.text
    assert "litlogger" not in caplog.text
    assert "Trained 2 epoch(s)" in caplog.text  # the package's own summary line
    # warnings meant for the user still pass
    with pytest.warns(UserWarning, match="No validation cells"):
        _train(norm_mdata.copy(), validation_size=0.0)

    # at verbosity 3 Lightning's lines are shown, so the filtering above is what hid them
    cmn.settings.verbosity = 3
    caplog.clear()
    with caplog.at_level(logging.INFO):
        _train(norm_mdata.copy())
    assert "GPU available" in caplog.text


def test_early_stopping_is_summarised_not_printed(norm_mdata, capsys, caplog):
    """scvi-tools' early-stopping callback prints its reason; training logs one summary line instead."""
    with caplog.at_level(logging.INFO):
        model = _train_long(norm_mdata.copy())
    assert "Signaling Trainer to stop" not in capsys.readouterr().out
    assert "(stopped early)" in caplog.text
    assert len(model.history["pearson_protein_validation"]) < 40


def _train_long(mdata):
    import scvi

    from crossmodalnet.model import CrossmodalNet

    CrossmodalNet.setup_mudata(mdata, time_key="time")
    scvi.settings.seed = 0
    model = CrossmodalNet(mdata, n_latent=8)
    model.train(max_epochs=40, early_stopping_patience=1, batch_size=64, accelerator="cpu", enable_progress_bar=False)
    return model
