"""Atomic save and verified load of a model folder: scvi-tools' files plus a manifest with checksums."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Self

    from mudata import MuData

MANIFEST = "crossmodalnet.json"
FORMAT_NAME = "crossmodalnet-model"
FORMAT_VERSION = 1


def _package_version() -> str:
    from crossmodalnet import __version__

    return __version__


def sha256(path: Path) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_model_dir(path: Path, prefix: str | None) -> None:
    """Check a saved-model folder before loading; name what is wrong and how to fix it.

    Parameters
    ----------
    path
        Folder written by :meth:`~crossmodalnet.model.CrossmodalNet.save`.
    prefix
        File-name prefix given at save time.
    """
    if not path.is_dir():
        raise FileNotFoundError(f"No saved model at {path}: the folder does not exist.")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise ValueError(
            f"{path} is not a complete crossmodalnet model folder: {MANIFEST} is missing "
            "(an interrupted save, or a folder written by another tool). Save the model again."
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{manifest_path} is corrupted ({err}); save the model again.") from None
    if manifest.get("format") != FORMAT_NAME or manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} holds model format {manifest.get('format')!r} version {manifest.get('format_version')!r}, "
            f"written by crossmodalnet {manifest.get('crossmodalnet_version')!r}; this crossmodalnet "
            f"({_package_version()}) reads {FORMAT_NAME!r} version {FORMAT_VERSION}. Load it with the version that "
            "saved it and retrain, or save it again."
        )
    if (prefix or "") != manifest.get("prefix", ""):
        raise ValueError(f"{path} was saved with prefix {manifest.get('prefix')!r}, not {prefix!r}.")
    for name, expected in manifest.get("sha256", {}).items():
        file = path / name
        if not file.is_file():
            raise ValueError(f"{path} is incomplete: {name} is missing. Save the model again.")
        if sha256(file) != expected:
            raise ValueError(f"{path / name} does not match its checksum: the file is corrupted or was modified.")


class _DropMessages(logging.Filter):
    """Drop log records whose message contains one of ``fragments``."""

    def __init__(self, *fragments: str):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(f in record.getMessage() for f in self.fragments)


@contextlib.contextmanager
def without_messages(logger_name: str, *fragments: str) -> Iterator[None]:
    """Silence specific messages of one third-party logger for the duration of a call the package makes."""
    target = logging.getLogger(logger_name)
    drop = _DropMessages(*fragments)
    target.addFilter(drop)
    try:
        yield
    finally:
        target.removeFilter(drop)


class SaveLoadMixin:
    """Atomic :meth:`save` and checksum-verified :meth:`load` over scvi-tools' :class:`~scvi.model.base.BaseModelClass`."""

    def save(
        self,
        dir_path: str | os.PathLike,
        *,
        overwrite: bool = False,
        save_anndata: bool = False,
        prefix: str | None = None,
    ) -> None:
        """Save the model atomically: everything is written to a temporary folder, then renamed.

        A crash or full disk part-way leaves ``dir_path`` either absent or as it was, never half
        written. The folder holds scvi-tools' ``model.pt`` (weights, registry, split, GradNorm and
        input-scaling state, discriminators) and ``crossmodalnet.json`` (format version, package
        version, SHA-256 checksum of each file), which :meth:`~crossmodalnet.model.CrossmodalNet.load`
        verifies.

        Parameters
        ----------
        dir_path
            Folder to create.
        overwrite
            Replace an existing folder; otherwise an existing ``dir_path`` raises.
        save_anndata
            Also write the registered MuData into the folder.
        prefix
            File-name prefix.
        """
        target = Path(dir_path)
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target} already exists; pass `overwrite=True` to replace it.")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            super().save(str(tmp), prefix=prefix, overwrite=True, save_anndata=save_anndata)
            files = sorted(f.name for f in tmp.iterdir())
            manifest = {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "crossmodalnet_version": _package_version(),
                "prefix": prefix or "",
                "sha256": {name: sha256(tmp / name) for name in files},
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
            if target.exists():
                backup = target.with_name(f".{target.name}.old-{os.getpid()}")
                target.rename(backup)
                tmp.rename(target)
                shutil.rmtree(backup, ignore_errors=True)
            else:
                tmp.rename(target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    @classmethod
    def load(
        cls,
        dir_path: str,
        mdata: MuData | None = None,
        *,
        accelerator: str = "cpu",
        device: int | str = "auto",
        prefix: str | None = None,
    ) -> Self:
        """Load a model saved with :meth:`~crossmodalnet.model.CrossmodalNet.save`.

        Parameters
        ----------
        dir_path
            Directory written by :meth:`save`.
        mdata
            MuData laid out like the training data (same modalities, layers, genes and covariate
            columns), for continued training or default predictions. ``None`` loads the model
            without data: pass a MuData to each getter.
        accelerator, device
            Where to put the model.
        prefix
            File-name prefix used at save time.

        Returns
        -------
        The model, in evaluation mode.
        """
        verify_model_dir(Path(dir_path), prefix)
        # scvi-tools logs "File ... already downloaded" for every local model file; nothing is downloaded here.
        # Its load() reads `mdata.mod_names`, which mudata deprecates: a notice about scvi-tools' code, not the user's.
        with (
            without_messages("scvi.data._download", "already downloaded"),
            warnings.catch_warnings(),
        ):
            warnings.filterwarnings("ignore", message=r".*\bmod_names\b is deprecated", category=FutureWarning)
            return super().load(
                str(dir_path),
                adata=mdata if mdata is not None else False,
                accelerator=accelerator,
                device=device,
                prefix=prefix,
            )
