"""Benchmark data sets: generated CITE-seq at named sizes and small real sets read from a given folder.

Every loader returns a :class:`BenchmarkData` holding dense model inputs (log-normalised RNA),
dense targets (CLR-normalised proteins), one time label per cell and the raw counts that totalVI
needs. Nothing here imports torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import sparse

if TYPE_CHECKING:
    import os
    from collections.abc import Sequence

    from anndata import AnnData
    from mudata import MuData

logger = logging.getLogger(__name__)

SYNTHETIC_SIZES: dict[str, tuple[int, int, int]] = {
    "quick": (240, 120, 8),
    "D1": (1_000, 3_000, 50),
    "D2": (3_000, 5_000, 50),
    "D3": (10_000, 8_000, 50),
    "L50k": (50_000, 2_000, 30),
}
"""Named sizes of generated data, ``(cells, genes, proteins)``; D1–D3 are the paper's Table S2 sizes, ``L50k``
the 5·10⁴-cell set on which the default must leave its ridge start (issue 27)."""

REAL_DATASETS = ("bmmc", "pbmc", "dyngen")
"""Short names of the real data sets (small sanity checks, not paper-comparable benchmarks)."""

REAL_DATASET_FOLDERS = {"bmmc": "bmmc_cite_600", "pbmc": "pbmc1k_protein_v3", "dyngen": "dyngen_bifurcating_200"}
"""Folder of each real data set inside ``data_dir``; each holds ``rna.h5ad`` and the protein file."""

SYNTHETIC_STRUCTURES = ("drivers", "programs")
"""Protein structures of :func:`~crossmodalnet.datasets.synthetic_cite` used by the benchmark."""

SETTINGS = ("in_distribution", "heldout_time")
"""Evaluation settings: 80/5/15 split stratified by time, and one middle time point held out."""

TRAIN_SIZE = 0.8
VALIDATION_SIZE = 0.05


@dataclass
class BenchmarkData:
    """One data set, preprocessed and ready for every method.

    Attributes
    ----------
    name
        Data-set name used in the tables (e.g. ``"synthetic_D1"``).
    X
        Log-normalised RNA, cells × genes, dense ``float32``.
    Y
        Normalised proteins (the target), cells × proteins, dense ``float32``.
    time
        Time label of each cell (object array); a constant for data without a time covariate.
    time_categories
        Time labels in time order.
    time_role
        What plays the role of time, in words (shown in the tables).
    gene_names, protein_names, obs_names
        Feature and cell names.
    rna_counts, protein_counts
        Raw counts (sparse CSR) for count-based methods (totalVI); ``None`` if unavailable.
    holdout
        The time point held out in the ``"heldout_time"`` setting, or ``None`` if that setting does
        not apply (then ``holdout_reason`` says why).
    sanity_check
        ``True`` for small real sets whose numbers are sanity checks only.
    target_transform
        How ``Y`` was computed from protein counts, in words.
    """

    name: str
    X: np.ndarray
    Y: np.ndarray
    time: np.ndarray
    time_categories: list
    time_role: str
    gene_names: pd.Index
    protein_names: pd.Index
    obs_names: pd.Index
    rna_counts: sparse.csr_matrix | None = None
    protein_counts: sparse.csr_matrix | None = None
    holdout: object = None
    holdout_reason: str = ""
    sanity_check: bool = False
    has_time: bool = True
    target_transform: str = "CLR per cell (muon: log1p(x / exp(mean(log1p(x)))))"
    extra: dict = field(default_factory=dict)

    @property
    def n_obs(self) -> int:
        """Number of cells."""
        return int(self.X.shape[0])

    @property
    def time_codes(self) -> np.ndarray:
        """Integer code of each cell's time point, in the order of :attr:`time_categories`."""
        index = pd.Index(pd.Series(self.time_categories).astype(str))
        codes = index.get_indexer(pd.Series(self.time).astype(str))
        if (codes < 0).any():
            raise ValueError(f"{self.name}: some time labels are not in `time_categories`.")
        return codes.astype(np.int64)

    def describe(self) -> str:
        """One line: size and time covariate."""
        return (
            f"{self.name}: {self.n_obs} cells × {self.X.shape[1]} genes × {self.Y.shape[1]} proteins; "
            f"time: {self.time_role}"
        )

    @classmethod
    def from_mudata(
        cls, mdata: MuData, *, name: str, time: np.ndarray, time_categories: list, time_role: str, **kwargs
    ) -> BenchmarkData:
        """Build from a MuData with normalised ``"rna"`` and ``"prot"`` and raw counts in ``layers["counts"]``.

        Parameters
        ----------
        mdata
            The data set, e.g. from :func:`normalized_mudata`.
        name, time, time_categories, time_role
            As the attributes of the same names.
        **kwargs
            Further attributes (``holdout``, ``sanity_check``, ``extra``, ...).

        Returns
        -------
        The data set, with dense ``X``/``Y`` and sparse counts.
        """
        rna, prot = mdata["rna"], mdata["prot"]
        return cls(
            name=name,
            X=_dense(rna.X),
            Y=_dense(prot.X),
            time=time,
            time_categories=time_categories,
            time_role=time_role,
            gene_names=pd.Index(rna.var_names.astype(str)),
            protein_names=pd.Index(prot.var_names.astype(str)),
            obs_names=pd.Index(mdata.obs_names.astype(str)),
            rna_counts=_csr(rna.layers["counts"]) if "counts" in rna.layers else None,
            protein_counts=_csr(prot.layers["counts"]) if "counts" in prot.layers else None,
            **kwargs,
        )

    def to_mudata(self, *, time_key: str = "time") -> MuData:
        """Build a MuData (``"rna"``: ``X``, ``"prot"``: ``Y``) with the time label in ``obs[time_key]``."""
        import anndata as ad
        import mudata as md

        obs = pd.DataFrame(index=self.obs_names.copy())
        rna = ad.AnnData(self.X, obs=obs.copy(), var=pd.DataFrame(index=self.gene_names.copy()))
        prot = ad.AnnData(self.Y, obs=obs.copy(), var=pd.DataFrame(index=self.protein_names.copy()))
        mdata = md.MuData({"rna": rna, "prot": prot})
        mdata.obs[time_key] = time_column(self.time, self.time_categories)
        return mdata


def time_column(time: np.ndarray, categories: Sequence) -> np.ndarray | pd.Categorical:
    """Numeric array for numeric time points, else an ordered categorical in the given order."""
    values = pd.to_numeric(pd.Series(time), errors="coerce")
    if not values.isna().any():
        return values.to_numpy()
    return pd.Categorical(np.asarray(time).astype(str), categories=[str(c) for c in categories], ordered=True)


def _dense(X) -> np.ndarray:
    return np.ascontiguousarray(X.toarray() if sparse.issparse(X) else np.asarray(X), dtype=np.float32)


def _csr(X) -> sparse.csr_matrix:
    return sparse.csr_matrix(X, dtype=np.float32)


def normalized_mudata(rna: AnnData, prot: AnnData) -> MuData:
    """Paired raw-count modalities as a MuData: log-normalised RNA and CLR proteins, counts kept in ``layers``.

    Parameters
    ----------
    rna, prot
        RNA and protein counts over the same cells (changed in place: ``.X`` becomes CSR).

    Returns
    -------
    MuData with modalities ``"rna"`` and ``"prot"``, normalised by :func:`crossmodalnet.pp.log_normalize`
    and :func:`crossmodalnet.pp.clr`.
    """
    import mudata as md

    import crossmodalnet as cmn

    rna.X, prot.X = _csr(rna.X), _csr(prot.X)
    mdata = md.MuData({"rna": rna, "prot": prot})
    cmn.pp.log_normalize(mdata)
    cmn.pp.clr(mdata)
    return mdata


def load_synthetic(size: str, *, seed: int = 0, structure: str = "drivers") -> BenchmarkData:
    """Generate :func:`~crossmodalnet.datasets.synthetic_cite` data of a named size.

    Three time points (days 2, 3, 4); RNA log-normalised, proteins CLR-normalised per cell, both
    per-cell operations, so normalising before the split leaks nothing between cells.

    Parameters
    ----------
    size
        A key of ``SYNTHETIC_SIZES``.
    seed
        Seed of the simulator.
    structure
        ``structure`` of :func:`~crossmodalnet.datasets.synthetic_cite`; ``"programs"`` data sets
        are named ``synthetic_programs_<size>``.
    """
    import crossmodalnet as cmn

    if size not in SYNTHETIC_SIZES:
        raise ValueError(f"Unknown synthetic size {size!r}; choose from {list(SYNTHETIC_SIZES)}.")
    if structure not in SYNTHETIC_STRUCTURES:
        raise ValueError(f"Unknown synthetic structure {structure!r}; choose from {list(SYNTHETIC_STRUCTURES)}.")
    n_obs, n_genes, n_proteins = SYNTHETIC_SIZES[size]
    mdata = cmn.datasets.synthetic_cite(
        n_obs=n_obs, n_genes=n_genes, n_proteins=n_proteins, n_time_points=3, structure=structure, rng=seed
    )
    name = f"synthetic_{size}" if structure == "drivers" else f"synthetic_programs_{size}"
    return synthetic_benchmark_data(mdata, name=name, extra={"size": size, "seed": seed, "structure": structure})


def synthetic_benchmark_data(mdata: MuData, *, name: str, **kwargs) -> BenchmarkData:
    """Normalise a raw :func:`~crossmodalnet.datasets.synthetic_cite` MuData (in place) for the harness.

    Parameters
    ----------
    mdata
        Raw counts with ``obs["time"]``; RNA is log-normalised and proteins CLR-normalised in place.
    name
        Data-set name.
    **kwargs
        Further ``BenchmarkData`` attributes (``extra``, ...).

    Returns
    -------
    The data set; its middle time point is the held-out one.
    """
    import crossmodalnet as cmn

    cmn.pp.log_normalize(mdata)
    cmn.pp.clr(mdata)
    time = mdata.obs["time"].to_numpy()
    cats = sorted(np.unique(time).tolist())
    return BenchmarkData.from_mudata(
        mdata,
        name=name,
        time=time.astype(object),
        time_categories=cats,
        time_role=f"simulated day ({', '.join(str(c) for c in cats)})",
        holdout=cats[len(cats) // 2],
        **kwargs,
    )


def load_bmmc(data_dir: str | os.PathLike) -> BenchmarkData:
    """Load ``bmmc_cite_600`` (600 cells; donor batch s1d1/s1d2 stands in for time).

    RNA ``.X`` is log-normalised and ADT ``.X`` normalised already (per-cell CLR of the counts,
    isotype controls removed) and both are used as they are. With only two categories there is no
    middle point to hold out, so only the in-distribution setting applies.
    """
    import anndata as ad

    folder = Path(data_dir) / "bmmc_cite_600"
    rna = ad.read_h5ad(folder / "rna.h5ad")
    adt = ad.read_h5ad(folder / "adt.h5ad")
    common = rna.obs_names.intersection(adt.obs_names, sort=False)
    rna, adt = rna[common].copy(), adt[common].copy()
    batch = rna.obs["batch"]
    cats = [str(c) for c in (batch.cat.categories if hasattr(batch, "cat") else sorted(batch.unique()))]
    return BenchmarkData(
        name="bmmc_cite_600",
        X=_dense(rna.X),
        Y=_dense(adt.X),
        time=batch.astype(str).to_numpy(dtype=object),
        time_categories=cats,
        time_role="donor batch s1d1 / s1d2 (categorical)",
        gene_names=pd.Index(rna.var_names.astype(str)),
        protein_names=pd.Index(adt.var_names.astype(str)),
        obs_names=pd.Index(common.astype(str)),
        rna_counts=_csr(rna.layers["counts"]) if "counts" in rna.layers else None,
        protein_counts=_csr(adt.layers["counts"]) if "counts" in adt.layers else None,
        holdout=None,
        holdout_reason="only two batches: no middle time point to hold out",
        sanity_check=True,
        target_transform="ADT `.X` as distributed (per-cell CLR of the counts)",
    )


def load_pbmc(data_dir: str | os.PathLike) -> BenchmarkData:
    """Load ``pbmc1k_protein_v3`` (747 cells, no covariate: one pseudo time point).

    Raw counts in both files: the three isotype controls are dropped from the proteins, then RNA is
    log-normalised with :func:`crossmodalnet.pp.log_normalize` and proteins CLR-normalised per cell
    with :func:`crossmodalnet.pp.clr`. In-distribution only.
    """
    import anndata as ad

    folder = Path(data_dir) / "pbmc1k_protein_v3"
    rna = ad.read_h5ad(folder / "rna.h5ad")
    adt = ad.read_h5ad(folder / "adt.h5ad")
    common = rna.obs_names.intersection(adt.obs_names, sort=False)
    rna, adt = rna[common].copy(), adt[common].copy()
    rna.var_names_make_unique()
    is_iso = np.array(["control" in v.lower() or v.lower().startswith("igg") for v in adt.var_names])
    dropped = [str(v) for v in adt.var_names[is_iso]]
    adt = adt[:, ~is_iso].copy()
    mdata = normalized_mudata(rna, adt)
    return BenchmarkData.from_mudata(
        mdata,
        name="pbmc1k_protein_v3",
        time=np.full(mdata.n_obs, "all", dtype=object),
        time_categories=["all"],
        time_role="none (one pseudo time point)",
        holdout=None,
        holdout_reason="no time covariate",
        sanity_check=True,
        has_time=False,
        extra={"dropped_isotypes": dropped},
    )


def load_dyngen(data_dir: str | os.PathLike) -> BenchmarkData:
    """Load ``dyngen_bifurcating_200`` (200 cells; 4 simulation-time bins act as time points).

    RNA counts are log-normalised with :func:`crossmodalnet.pp.log_normalize`; protein molecule
    counts are CLR-normalised per cell with :func:`crossmodalnet.pp.clr`. Each time bin becomes
    the numeric time point of its midpoint (60, 180, 300, 420), so a held-out bin can be
    interpolated; the held-out setting holds out the third bin (300).
    """
    import anndata as ad

    folder = Path(data_dir) / "dyngen_bifurcating_200"
    rna = ad.read_h5ad(folder / "rna.h5ad")
    prot = ad.read_h5ad(folder / "protein.h5ad")
    common = rna.obs_names.intersection(prot.obs_names, sort=False)
    rna, prot = rna[common].copy(), prot[common].copy()
    prot.var_names = [f"{v}-prot" for v in prot.var_names]
    mdata = normalized_mudata(rna, prot)
    bins = rna.obs["time_bin"]
    order = list(bins.cat.categories) if hasattr(bins, "cat") else sorted(bins.unique())
    order = sorted(order, key=lambda b: float(str(b).lstrip("t").split("-")[0]))
    mids = {b: (lambda lo, hi: (lo + hi) // 2)(*(int(x) for x in str(b).lstrip("t").split("-"))) for b in order}
    time = np.array([mids[b] for b in bins.astype(str)], dtype=object)
    cats = [mids[b] for b in order]
    return BenchmarkData.from_mudata(
        mdata,
        name="dyngen_bifurcating_200",
        time=time,
        time_categories=cats,
        time_role="simulation-time bin midpoint (60, 180, 300, 420)",
        holdout=cats[len(cats) // 2],
        sanity_check=True,
    )


def check_data_dir(names: Sequence[str], data_dir: str | os.PathLike | None) -> Path | None:
    """Check that ``data_dir`` holds the files of the real data sets ``names``; return it as a path.

    Parameters
    ----------
    names
        Short names of real data sets (elements of ``REAL_DATASETS``); an empty list needs no folder.
    data_dir
        Folder holding one subfolder per data set (``bmmc_cite_600/``, ``pbmc1k_protein_v3/``,
        ``dyngen_bifurcating_200/``).

    Returns
    -------
    ``data_dir`` as a :class:`~pathlib.Path`, or ``None`` when ``data_dir`` is ``None`` and no real set is asked for.
    """
    names = list(names)
    if not names:
        return None if data_dir is None else Path(data_dir)
    if data_dir is None:
        raise ValueError(
            f"Real data sets {names} need `data_dir` (CLI: `--data-dir`), the folder that holds "
            f"{[REAL_DATASET_FOLDERS[n] + '/' for n in names]}, e.g. `--data-dir ../shared/data`."
        )
    missing = [
        str(Path(data_dir) / REAL_DATASET_FOLDERS[n] / "rna.h5ad")
        for n in names
        if not (Path(data_dir) / REAL_DATASET_FOLDERS[n] / "rna.h5ad").is_file()
    ]
    if missing:
        raise FileNotFoundError(f"`data_dir` lacks the files of the requested real data sets: {missing}.")
    return Path(data_dir)


def load_dataset(spec: str, *, seed: int = 0, data_dir: str | os.PathLike | None = None) -> BenchmarkData:
    """Load a data set from its spec: ``"synthetic:<size>"``, ``"programs:<size>"``, ``"bmmc"``, ``"pbmc"`` or ``"dyngen"``.

    Parameters
    ----------
    spec
        Generated data ``"synthetic:<size>"`` or ``"programs:<size>"`` (sizes: keys of ``SYNTHETIC_SIZES``),
        or the short name of a real data set.
    seed
        Seed of the simulator (generated data only).
    data_dir
        Folder holding the real data sets' folders (see ``REAL_DATASET_FOLDERS``); needed for real sets only.

    Returns
    -------
    The data set.
    """
    if spec.startswith("synthetic:"):
        return load_synthetic(spec.split(":", 1)[1], seed=seed)
    if spec.startswith("programs:"):
        return load_synthetic(spec.split(":", 1)[1], seed=seed, structure="programs")
    if spec not in REAL_DATASETS:
        raise ValueError(
            f"Unknown data set {spec!r}; use 'synthetic:<size>', 'programs:<size>', 'bmmc', 'pbmc' or 'dyngen'."
        )
    folder = check_data_dir([spec], data_dir)
    return {"bmmc": load_bmmc, "pbmc": load_pbmc, "dyngen": load_dyngen}[spec](folder)


def make_split(data: BenchmarkData, setting: str, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train/validation/test indices of a setting, from the same functions the model uses.

    ``"in_distribution"``: 80/5/15 stratified by time point
    (``stratified_split``). ``"heldout_time"``: every cell of
    ``data.holdout`` is a test cell; the rest is split 80:5 stratified by time
    (``holdout_split``).
    """
    from crossmodalnet.model import holdout_split, stratified_split

    codes = data.time_codes
    if setting == "in_distribution":
        return stratified_split(codes, train_size=TRAIN_SIZE, validation_size=VALIDATION_SIZE, rng=seed)
    if setting == "heldout_time":
        if data.holdout is None:
            raise ValueError(f"{data.name}: the held-out-time setting does not apply ({data.holdout_reason}).")
        code = [str(c) for c in data.time_categories].index(str(data.holdout))
        return holdout_split(codes, code, train_size=TRAIN_SIZE, validation_size=VALIDATION_SIZE, rng=seed)
    raise ValueError(f"Unknown setting {setting!r}; choose from {SETTINGS}.")
