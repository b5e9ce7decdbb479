"""Package settings: the verbosity of crossmodalnet's own messages (scanpy's ``settings.verbosity`` style)."""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

_LOGGER = "crossmodalnet"
_LEVELS = {"error": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO, "debug": logging.DEBUG}
_BY_NUMBER = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: logging.DEBUG}


class _DefaultHandler(logging.StreamHandler):
    """Print crossmodalnet's messages, one line each, to the current ``sys.stderr``.

    As in scanpy and scvi-tools, the ``"crossmodalnet"`` logger has its own handler and does not
    propagate to the root logger, so the messages appear once whatever the root configuration (mudata,
    for one, configures the root logger implicitly). Add handlers to the ``"crossmodalnet"`` logger to
    route them elsewhere.
    """

    def __init__(self):
        super().__init__(stream=None)
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # the current stderr (notebooks and tests replace it)
        super().emit(record)


class Settings:
    """Settings of crossmodalnet, as ``cmn.settings``.

    Examples
    --------
    >>> import crossmodalnet as cmn
    >>> cmn.settings.verbosity = "warning"  # only warnings and errors
    >>> cmn.settings.verbosity = 3  # everything, including Lightning's own messages during training
    >>> cmn.settings.seed = 0  # the same model from the same data and arguments (on CPU)
    """

    def __init__(self):
        self._logger = logging.getLogger(_LOGGER)
        if not any(isinstance(h, _DefaultHandler) for h in self._logger.handlers):
            self._logger.addHandler(_DefaultHandler())
        self._logger.propagate = False
        self.verbosity = "info"
        self._seed: int | None = None

    @property
    def seed(self) -> int | None:
        """Seed of every model built and trained from now on; ``None`` (default) leaves the random state alone.

        When set, :class:`~crossmodalnet.model.CrossmodalNet` seeds Python's, NumPy's and torch's random
        generators with it before drawing its initial weights, and again at the start of each
        :meth:`~crossmodalnet.model.CrossmodalNet.train` call (mini-batch order, dropout), which also
        draws its split with it (unless ``split_seed`` is given). Two models built and trained with the
        same seed, data and arguments are then identical on CPU, in one process or in two, whatever
        ``scvi.settings.seed`` says. Unset, training follows ``scvi.settings.seed`` as in scvi-tools:
        it is applied once, when set, so a second model in the same process starts from another
        random state.
        """
        return self._seed

    @seed.setter
    def seed(self, value: int | None) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"`seed` must be a non-negative integer or None, got {value!r}.")
        self._seed = value

    @property
    def verbosity(self) -> int:
        """Verbosity of crossmodalnet's messages: 0 errors, 1 warnings, 2 info (default), 3 debug.

        Also accepts ``"error"``, ``"warning"``, ``"info"``, ``"debug"``. The messages go to the
        ``"crossmodalnet"`` logger, which prints them to stderr (one line each) and does not propagate
        to the root logger, as in scanpy and scvi-tools. At 3 (debug), the messages of Lightning and the third-party
        warnings that training triggers are shown as well; below, the package keeps them out.
        """
        level = self._logger.level
        return {v: k for k, v in _BY_NUMBER.items()}.get(level, 2)

    @verbosity.setter
    def verbosity(self, value: int | str) -> None:
        if isinstance(value, str) and value.lower() in _LEVELS:
            level = _LEVELS[value.lower()]
        elif isinstance(value, int) and not isinstance(value, bool) and value in _BY_NUMBER:
            level = _BY_NUMBER[value]
        else:
            raise ValueError(f"`verbosity` must be 0-3 or one of {list(_LEVELS)}, got {value!r} (scanpy's convention).")
        self._logger.setLevel(level)

    def __repr__(self) -> str:
        return f"crossmodalnet settings: verbosity={self.verbosity}, seed={self.seed}"


settings = Settings()


def stdout_is_interactive() -> bool:
    """Whether ``sys.stdout`` shows a progress bar as one redrawn line: a terminal or a Jupyter kernel.

    scvi-tools draws its training bar on ``sys.stdout`` with carriage returns; written to a file, a pipe or
    captured output, each redraw becomes part of the text.
    """
    stream = sys.stdout
    try:
        if stream is not None and stream.isatty():
            return True
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        pass
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return shell is not None and hasattr(shell, "kernel")


# Lightning's informational lines during training that say nothing about the user's model.
_LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")
# Third-party deprecation and advice messages that the package's own calls trigger.
_THIRD_PARTY_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r"The number of training batches .* is smaller than the logging interval.*",
    r".*`__version__` is deprecated.*",
    r"From 0.4 .update\(\) will not pull obs/var columns.*",
)


@contextlib.contextmanager
def quiet_third_party() -> Iterator[None]:
    """Keep Lightning's info lines and known third-party deprecation notices, triggered by the package, out.

    Only specific messages are filtered, only for the duration of the call; warnings meant for the user
    (and Lightning's warnings) pass. Everything is shown at ``cmn.settings.verbosity = 3``.
    """
    if settings.verbosity >= 3:
        yield
        return
    loggers = [logging.getLogger(name) for name in _LIGHTNING_LOGGERS]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        for message in _THIRD_PARTY_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)
