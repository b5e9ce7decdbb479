"""Seeded, offline simulator of time-resolved CITE-seq data with planted ground truth."""

from __future__ import annotations

import logging
import math
from numbers import Integral, Real
from typing import TYPE_CHECKING, Literal

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse as sp

if TYPE_CHECKING:
    from mudata import MuData

__all__ = ["synthetic_cite", "synthetic_empty_droplets"]

logger = logging.getLogger(__name__)

UNS_KEY = "cmn_synthetic"
"""Key of the ground-truth dictionary in ``mdata.uns``."""

DRIVER_KINDS = ("own_gene", "other", "interaction")
"""Kinds of protein regulation planted by :func:`~crossmodalnet.datasets.synthetic_cite` (isotype controls get ``"isotype"``)."""

_FIRST_DAY = 2  # time_values = _FIRST_DAY + arange(n_time_points), in days
_N_PROGRAMS = 10  # latent gene programs spanned by the cell states
_PROGRAM_LOADING_PROB = 0.3  # chance that a gene loads on a given program
_PROGRAM_LOADING_SD = 0.5
_WITHIN_STATE_SD = 0.5  # per-cell scatter around the state centre in program space
_GENE_BASELINE_MEAN = -2.2  # log-mean of a typical gene at size factor 1 (gives ~20% non-zero)
_GENE_BASELINE_SD = 1.2  # log-normal spread of gene baselines (~2-3 orders of magnitude)
_TIME_GENE_FRACTION = 0.1
_RNA_LIBRARY_SD = 0.35
_RNA_THETA_LOG_MEAN = math.log(4.0)  # NB inverse dispersion of RNA
_PROT_THETA_LOG_MEAN = math.log(10.0)  # NB inverse dispersion of proteins
_PROT_BASELINE_LOG_MEAN = math.log(80.0)
_PROT_BASELINE_SD = 0.6
_PROT_STATE_SD = 0.2  # small direct cell-state effect on proteins
_PROT_TECH_SD = 0.3  # per-droplet technical factor (protein library / ambient capture)
_BACKGROUND_LOG_MEAN = math.log(8.0)  # per-protein ambient (background) rate
_BACKGROUND_SD = 0.5
_BATCH_LIBRARY_SD = 0.3
_BATCH_GENE_SD = 0.1
_MAX_LOG_MEAN = 13.0  # cap so counts stay exactly representable in float32
_DENSITY_SUBSAMPLE = 256


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool | np.bool_) or not isinstance(value, Integral):
        raise TypeError(f"`{name}` must be an integer, got {type(value).__name__}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}.")
    return int(value)


def _resolve_rng(rng: int | np.random.Generator | None) -> tuple[np.random.Generator, int]:
    """Return a generator and the seed to record (``-1`` when not reproducible from an int)."""
    if isinstance(rng, np.random.Generator):
        return rng, -1
    if rng is None:
        return np.random.default_rng(), -1
    if isinstance(rng, bool | np.bool_) or not isinstance(rng, Integral):
        raise TypeError(f"`rng` must be an int, a numpy.random.Generator or None, got {type(rng).__name__}.")
    if rng < 0:
        raise ValueError(f"`rng` must be a non-negative seed, got {rng}.")
    return np.random.default_rng(int(rng)), int(rng)


def _scaled_time(n_time_points: int) -> np.ndarray:
    """Normalised time s in [0, 1] for every time point."""
    if n_time_points == 1:
        return np.zeros(1)
    return np.linspace(0.0, 1.0, n_time_points)


def _smooth_time_curve(
    rng: np.random.Generator, s: np.ndarray, n: int, amplitude: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``n`` smooth curves ``a * s + b * s**2`` (``|b| <= 0.2 |a|``), returned as (len(s), n) plus a and b."""
    a = rng.choice([-1.0, 1.0], size=n) * rng.uniform(0.5, 1.5, size=n) * amplitude
    b = a * rng.uniform(-0.2, 0.2, size=n)
    return a[None, :] * s[:, None] + b[None, :] * s[:, None] ** 2, a, b


def _nonzero_fraction(log_mu: np.ndarray, theta: np.ndarray, shift: float) -> float:
    """Expected fraction of non-zero NB(mu, theta) draws after shifting the log-means."""
    mu = np.exp(np.minimum(log_mu + shift, _MAX_LOG_MEAN))
    return float(np.mean(-np.expm1(-theta * np.log1p(mu / theta))))


def _density_shift(log_mu: np.ndarray, theta: np.ndarray, density: float) -> float:
    """Bisect a global log-mean shift so that roughly ``density`` of the entries are non-zero."""
    lo, hi = -12.0, 12.0
    if _nonzero_fraction(log_mu, theta, hi) <= density:
        return hi
    if _nonzero_fraction(log_mu, theta, lo) >= density:
        return lo
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if _nonzero_fraction(log_mu, theta, mid) < density:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _nb(rng: np.random.Generator, mu: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Negative binomial draws with mean ``mu`` and inverse dispersion ``theta`` (gamma-Poisson)."""
    return rng.poisson(rng.gamma(shape=theta, scale=mu / theta))


def _as_matrix(counts: np.ndarray, *, sparse: bool) -> np.ndarray | sp.csr_matrix:
    x = np.asarray(counts, dtype=np.float32)
    return sp.csr_matrix(x) if sparse else x


def _names(prefix: str, n: int, width: int) -> list[str]:
    width = max(width, len(str(max(n - 1, 0))))
    return [f"{prefix}{i:0{width}d}" for i in range(n)]


def _choose_drivers(
    rng: np.random.Generator, expected_log_mean: np.ndarray, n_proteins: int, n_drivers: int
) -> np.ndarray:
    """Pick ``n_drivers`` driver genes per protein among the better-expressed genes (disjoint when possible)."""
    n_genes = expected_log_mean.size
    order = np.argsort(-expected_log_mean, kind="stable")
    n_needed = n_proteins * n_drivers
    if n_needed <= n_genes:
        pool = order[: max(n_needed, n_genes // 2)]
        return rng.permutation(pool)[:n_needed].reshape(n_proteins, n_drivers)
    logger.info(
        "n_proteins * n_drivers = %d exceeds n_genes = %d: driver genes are shared between proteins.",
        n_needed,
        n_genes,
    )
    pool = order[: max(n_drivers, n_genes // 2)]
    return np.stack([rng.choice(pool, size=n_drivers, replace=False) for _ in range(n_proteins)])


def _unique_coding_genes(drivers: np.ndarray, kinds: np.ndarray) -> None:
    """Make the coding genes (first driver) of ``"own_gene"`` proteins unique, in place.

    Only needed when driver genes are shared between proteins. A protein whose drivers are all taken as
    coding genes already becomes ``"other"``.
    """
    used: set[int] = set()
    for j in np.flatnonzero(kinds == "own_gene"):
        free = [k for k in range(drivers.shape[1]) if int(drivers[j, k]) not in used]
        if not free:
            kinds[j] = "other"
            continue
        k = free[0]
        drivers[j, [0, k]] = drivers[j, [k, 0]]
        used.add(int(drivers[j, 0]))


def synthetic_cite(
    *,
    n_obs: int = 2000,
    n_genes: int = 2000,
    n_proteins: int = 50,
    n_time_points: int = 3,
    n_states: int = 5,
    n_batches: int = 1,
    n_drivers: int = 3,
    time_effect: float = 1.0,
    density: float | None = None,
    n_isotypes: int = 0,
    sparse: bool = True,
    structure: Literal["drivers", "programs"] = "drivers",
    rng: int | np.random.Generator | None = 0,
) -> MuData:
    r"""Simulate a time-resolved CITE-seq experiment with planted RNA-to-protein drivers.

    The simulator runs offline and needs neither torch nor network access. Every protein is driven
    non-linearly by a known set of driver genes and shifted smoothly over time, so that protein
    prediction, interpolation of an unseen time point and driver-gene recovery can be scored against
    the ground truth stored in ``mdata.uns["cmn_synthetic"]``.

    Parameters
    ----------
    n_obs
        Number of cells (at least 2 and at least ``n_time_points``).
    n_genes
        Number of genes in the ``"rna"`` modality.
    n_proteins
        Number of antibody-derived tags with planted drivers (isotype controls excluded).
    n_time_points
        Number of time points; cells are split evenly between them. The numeric time values (days)
        are ``2, 3, ..., n_time_points + 1``.
    n_states
        Number of latent cell states (clusters in a 10-dimensional gene-program space).
    n_batches
        Number of batches. Batches scale the library sizes and shift genes slightly.
    n_drivers
        Number of driver genes per protein.
    time_effect
        Amplitude multiplier of every time effect (RNA time genes, drift of the state proportions and
        the direct protein shifts). ``0`` removes all time dependence.
    density
        Target fraction of non-zero RNA entries in ``(0, 1]``, reached by shifting all gene baselines.
        ``None`` keeps the natural baselines (about 15-30% non-zero).
    n_isotypes
        Number of isotype-control features, named ``Isotype_1, ...`` and appended after the proteins.
        They carry ambient background counts only.
    sparse
        Store ``.X`` of both modalities as :class:`scipy.sparse.csr_matrix` instead of a dense array.
    structure
        How proteins depend on RNA. ``"drivers"``: each protein follows ``n_drivers`` sparse driver
        genes (own gene, other genes, or an interaction). ``"programs"``: each protein follows the
        cell's low-rank program activity (the same programs that shape the RNA) plus its own coding
        mRNA, as most real surface proteins do; ``n_drivers`` is then ignored and every protein is
        ``"own_gene"`` with its coding gene as its only listed driver.
    rng
        Seed, :class:`numpy.random.Generator` or ``None`` (fresh entropy).

    Returns
    -------
    MuData with modalities ``"rna"`` and ``"prot"`` sharing the cells ``cell_0000, ...``.

    - ``.X`` of both modalities: raw integer counts stored as ``float32``.
    - ``obs`` (global and per modality): ``"cell_state"`` (categorical ``state_0, ...``),
      ``"time"`` (int, days) and ``"batch"`` (categorical ``batch_0, ...``).
    - ``mdata["rna"].var``: names ``gene_0000, ...`` and ``"gene_ids"`` (fake Ensembl IDs).
    - ``mdata["prot"].var``: ``"coding_gene"`` (gene name or ``""``) and ``"isotype"`` (bool).
    - ``mdata.uns["cmn_synthetic"]``: the ground truth (see Notes).

    Examples
    --------
    >>> import crossmodalnet as cmn
    >>> mdata = cmn.datasets.synthetic_cite(n_obs=200, n_genes=60, n_proteins=8, rng=0)
    >>> mdata["rna"].shape, mdata["prot"].shape
    ((200, 60), (200, 8))
    >>> sorted(mdata.obs["time"].unique().tolist())
    [2, 3, 4]

    Notes
    -----
    Generative model, per cell :math:`i`, gene :math:`g` and protein :math:`j`:

    - Time: :math:`s_t \in [0, 1]` is the normalised time. Every smooth time curve below has the form
      :math:`a s + b s^2` with :math:`|b| \le 0.2 |a|`, so a middle time point is close to the linear
      interpolation of its neighbours.
    - Cell states: proportions are a softmax of logits that drift linearly in :math:`s_t`. A cell's
      program activity is its state centre plus Gaussian scatter.
    - RNA: the log-mean is a log-normal gene baseline plus program loadings times the activity,
      plus a smooth time curve on 10% of the genes (``"rna_time_genes"``), plus a small batch shift. The
      counts are negative binomial (gamma-Poisson, inverse dispersion about 4) around a log-normal size
      factor times ``exp(log-mean)``.
    - Proteins: let :math:`x` be the standardised ``log1p(cp10k)`` of the observed driver counts. The
      activation is :math:`u = \sum_k w_k x_k / \lVert w \rVert`, and for ``"interaction"`` proteins
      :math:`u` also gets the centred product :math:`x_1 x_2`. The log-mean is
      :math:`\beta_j + A_j \tanh(u + c_j) + \text{time\_effects}[t, j] + \text{state effect}`. The counts
      are NB(technical factor * batch factor * ``exp(log-mean)``) plus ambient Poisson background
      (``protein_background[j]`` * technical factor) present in every droplet. ``"own_gene"`` proteins
      are named ``<gene>-prot`` and their first driver, with a positive weight, is that coding gene.
    - With ``structure="programs"`` the activation is instead
      :math:`u = \rho_j x_{\text{own}} + \sqrt{1 - \rho_j^2}\, \tilde a P_j / \lVert P_j \rVert`, where
      :math:`\tilde a` is the cell's standardised program activity, :math:`P` a Gaussian programs ×
      proteins matrix (``mdata.uns["cmn_synthetic"]["program_weights"]``) and
      :math:`\rho_j \sim U(0.3, 0.7)` the share of the coding mRNA (``"own_share"``).
    - Drivers are drawn from the better-expressed half of the genes, disjoint across proteins unless
      ``n_proteins * n_drivers > n_genes``. Kinds are split evenly; with ``n_drivers == 1`` there are no
      ``"interaction"`` proteins.

    Ground truth in ``mdata.uns["cmn_synthetic"]`` (HDF5-portable, no ``None`` or pandas objects):

    - ``driver_genes``: dict mapping protein name to array of driver gene names (isotypes are not included).
    - ``driver_kind``: array aligned with ``mdata["prot"].var_names``: ``"own_gene"``, ``"other"``,
      ``"interaction"`` or ``"isotype"``.
    - ``time_values``: the numeric time values. ``time_effects``: float array of shape
      ``(n_time_points, n_proteins + n_isotypes)`` of direct protein log-shifts (0 for isotypes).
    - ``protein_background``: per-feature ambient rate, used by :func:`synthetic_empty_droplets`.
    - ``rna_time_genes``: genes with a direct time effect. ``state_proportions``: array of shape
      ``(n_time_points, n_states)``.
    - ``params``: every argument; ``density=None`` is stored as ``-1.0``, and ``rng`` as its int seed,
      or ``-1`` for a generator or ``None``.
    """
    import mudata as md

    n_obs = _check_int("n_obs", n_obs, 2)
    n_genes = _check_int("n_genes", n_genes, 1)
    n_proteins = _check_int("n_proteins", n_proteins, 1)
    n_time_points = _check_int("n_time_points", n_time_points, 1)
    n_states = _check_int("n_states", n_states, 1)
    n_batches = _check_int("n_batches", n_batches, 1)
    n_drivers = _check_int("n_drivers", n_drivers, 1)
    n_isotypes = _check_int("n_isotypes", n_isotypes, 0)
    if n_obs < n_time_points:
        raise ValueError(f"`n_obs` ({n_obs}) must be >= `n_time_points` ({n_time_points}).")
    if n_obs < n_batches:
        raise ValueError(f"`n_obs` ({n_obs}) must be >= `n_batches` ({n_batches}).")
    if n_drivers > n_genes:
        raise ValueError(f"`n_drivers` ({n_drivers}) must be <= `n_genes` ({n_genes}).")
    if isinstance(time_effect, bool) or not isinstance(time_effect, Real) or not math.isfinite(time_effect):
        raise ValueError(f"`time_effect` must be a finite number, got {time_effect!r}.")
    if time_effect < 0:
        raise ValueError(f"`time_effect` must be >= 0, got {time_effect}.")
    if density is not None and (
        isinstance(density, bool) or not isinstance(density, Real) or not (0.0 < density <= 1.0)
    ):
        raise ValueError(f"`density` must be None or a number in (0, 1], got {density!r}.")
    if not isinstance(sparse, bool | np.bool_):
        raise TypeError(f"`sparse` must be a bool, got {type(sparse).__name__}.")
    if structure not in ("drivers", "programs"):
        raise ValueError(f"`structure` must be 'drivers' or 'programs', got {structure!r}.")
    if structure == "programs":
        n_drivers = 1
    gen, seed = _resolve_rng(rng)
    time_effect = float(time_effect)

    # --- design: time points, batches, cell states ---------------------------------------------------------
    time_values = (_FIRST_DAY + np.arange(n_time_points)).astype(np.int64)
    s = _scaled_time(n_time_points)
    time_idx = gen.permutation(np.arange(n_obs) % n_time_points)
    batch_idx = gen.permutation(np.arange(n_obs) % n_batches)

    state_logits = gen.normal(0.0, 0.5, n_states)[None, :] + gen.normal(0.0, 1.0, n_states)[None, :] * (
        time_effect * s[:, None]
    )
    state_props = np.exp(state_logits - state_logits.max(axis=1, keepdims=True))
    state_props /= state_props.sum(axis=1, keepdims=True)
    cum = np.cumsum(state_props, axis=1)
    state_idx = np.minimum((gen.random(n_obs)[:, None] > cum[time_idx]).sum(axis=1), n_states - 1)

    # --- RNA -------------------------------------------------------------------------------------------------
    centres = gen.normal(0.0, 1.0, (n_states, _N_PROGRAMS))
    activity = centres[state_idx] + gen.normal(0.0, _WITHIN_STATE_SD, (n_obs, _N_PROGRAMS))
    loadings = (gen.random((_N_PROGRAMS, n_genes)) < _PROGRAM_LOADING_PROB) * gen.normal(
        0.0, _PROGRAM_LOADING_SD, (_N_PROGRAMS, n_genes)
    )
    gene_baseline = gen.normal(_GENE_BASELINE_MEAN, _GENE_BASELINE_SD, n_genes)

    n_time_genes = max(1, round(_TIME_GENE_FRACTION * n_genes))
    time_genes = np.sort(gen.choice(n_genes, size=n_time_genes, replace=False))
    rna_time_shift = np.zeros((n_time_points, n_genes))
    rna_time_shift[:, time_genes] = _smooth_time_curve(gen, s, n_time_genes, time_effect)[0]

    batch_gene_shift = gen.normal(0.0, _BATCH_GENE_SD, (n_batches, n_genes))
    batch_rna_lib = np.exp(gen.normal(0.0, _BATCH_LIBRARY_SD, n_batches))
    batch_prot_lib = np.exp(gen.normal(0.0, _BATCH_LIBRARY_SD, n_batches))
    if n_batches == 1:
        batch_gene_shift[:] = 0.0
        batch_rna_lib[:] = 1.0
        batch_prot_lib[:] = 1.0

    size_factor = np.exp(gen.normal(0.0, _RNA_LIBRARY_SD, n_obs)) * batch_rna_lib[batch_idx]
    theta_rna = np.exp(gen.normal(_RNA_THETA_LOG_MEAN, 0.4, n_genes))

    log_mu = (
        gene_baseline[None, :]
        + activity @ loadings
        + rna_time_shift[time_idx]
        + batch_gene_shift[batch_idx]
        + np.log(size_factor)[:, None]
    )
    if density is not None:
        sub = log_mu[: min(n_obs, _DENSITY_SUBSAMPLE)]
        shift = _density_shift(sub, theta_rna[None, :], float(density))
        log_mu += shift
        logger.debug("Shifted gene baselines by %.3f to reach density %.3f.", shift, density)
    np.minimum(log_mu, _MAX_LOG_MEAN, out=log_mu)
    rna_mu = np.exp(log_mu)
    rna_counts = _nb(gen, rna_mu, theta_rna[None, :])

    # --- protein regulation ----------------------------------------------------------------------------------
    drivers = _choose_drivers(gen, np.log(rna_mu.mean(axis=0)), n_proteins, n_drivers)
    if structure == "programs":
        kinds = np.full(n_proteins, "own_gene")
        _unique_coding_genes(drivers, kinds)
        program_weights = gen.normal(0.0, 1.0, (_N_PROGRAMS, n_proteins))
        own_share = gen.uniform(0.3, 0.7, n_proteins)
    else:
        kinds_pool = np.array(DRIVER_KINDS if n_drivers >= 2 else DRIVER_KINDS[:2])
        kinds = kinds_pool[gen.permutation(np.arange(n_proteins) % kinds_pool.size)]
        _unique_coding_genes(drivers, kinds)
        weights = gen.choice([-1.0, 1.0], size=(n_proteins, n_drivers)) * gen.uniform(0.6, 1.2, (n_proteins, n_drivers))
        weights[kinds == "own_gene", 0] = gen.uniform(1.0, 1.5, int((kinds == "own_gene").sum()))
        interaction_sign = gen.choice([-1.0, 1.0], size=n_proteins) * gen.uniform(0.8, 1.2, n_proteins)
    own = kinds == "own_gene"
    amplitude = gen.uniform(1.0, 1.6, n_proteins)
    offset = gen.uniform(-0.5, 0.5, n_proteins)
    prot_baseline = gen.normal(_PROT_BASELINE_LOG_MEAN, _PROT_BASELINE_SD, n_proteins)
    state_effect = gen.normal(0.0, _PROT_STATE_SD, (n_states, n_proteins))
    time_effects_prot = _smooth_time_curve(gen, s, n_proteins, time_effect)[0]
    theta_prot = np.exp(gen.normal(_PROT_THETA_LOG_MEAN, 0.3, n_proteins))
    background = np.exp(gen.normal(_BACKGROUND_LOG_MEAN, _BACKGROUND_SD, n_proteins + n_isotypes))
    tech = np.exp(gen.normal(0.0, _PROT_TECH_SD, n_obs))

    totals = rna_counts.sum(axis=1, keepdims=True).astype(np.float64)
    totals[totals == 0] = 1.0
    unique_drivers, inverse = np.unique(drivers, return_inverse=True)
    x = np.log1p(rna_counts[:, unique_drivers] / totals * 1e4)
    sd = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    xd = x[:, inverse.reshape(drivers.shape)]  # (n_obs, n_proteins, n_drivers)

    if structure == "programs":
        a = (activity - activity.mean(axis=0)) / activity.std(axis=0)
        programs_part = a @ program_weights / np.linalg.norm(program_weights, axis=0)
        u = own_share * xd[:, :, 0] + np.sqrt(1.0 - own_share**2) * programs_part
    else:
        u = np.einsum("ipk,pk->ip", xd, weights) / np.linalg.norm(weights, axis=1)
    if structure == "drivers" and n_drivers >= 2:
        inter = kinds == "interaction"
        prod = xd[:, inter, 0] * xd[:, inter, 1]
        prod -= prod.mean(axis=0)
        g = interaction_sign[inter]
        u[:, inter] = (u[:, inter] + g * prod) / np.sqrt(1.0 + g**2)
    log_mu_prot = (
        prot_baseline[None, :]
        + amplitude * np.tanh(u + offset)
        + time_effects_prot[time_idx]
        + state_effect[state_idx]
        + np.log(tech * batch_prot_lib[batch_idx])[:, None]
    )
    np.minimum(log_mu_prot, _MAX_LOG_MEAN, out=log_mu_prot)
    signal = _nb(gen, np.exp(log_mu_prot), theta_prot[None, :])
    ambient = gen.poisson(tech[:, None] * background[None, :])
    prot_counts = ambient
    prot_counts[:, :n_proteins] += signal

    # --- assemble --------------------------------------------------------------------------------------------
    obs_names = _names("cell_", n_obs, 4)
    gene_names = np.array(_names("gene_", n_genes, 4))
    coding_gene = np.full(n_proteins + n_isotypes, "", dtype=object)
    coding_gene[:n_proteins][own] = gene_names[drivers[own, 0]]
    prot_names = [f"{coding_gene[j]}-prot" if own[j] else f"prot_{j:03d}" for j in range(n_proteins)]
    prot_names += [f"Isotype_{k + 1}" for k in range(n_isotypes)]

    obs = pd.DataFrame(
        {
            "cell_state": pd.Categorical.from_codes(state_idx, categories=[f"state_{k}" for k in range(n_states)]),
            "time": time_values[time_idx],
            "batch": pd.Categorical.from_codes(batch_idx, categories=[f"batch_{k}" for k in range(n_batches)]),
        },
        index=pd.Index(obs_names),
    )
    rna_var = pd.DataFrame({"gene_ids": [f"ENSG9{g + 1:010d}" for g in range(n_genes)]}, index=pd.Index(gene_names))
    prot_var = pd.DataFrame(
        {
            "coding_gene": coding_gene.astype(str),
            "isotype": np.arange(n_proteins + n_isotypes) >= n_proteins,
        },
        index=pd.Index(prot_names),
    )
    rna = ad.AnnData(_as_matrix(rna_counts, sparse=sparse), obs=obs.copy(), var=rna_var)
    prot = ad.AnnData(_as_matrix(prot_counts, sparse=sparse), obs=obs.copy(), var=prot_var)
    mdata = md.MuData({"rna": rna, "prot": prot})
    for col in obs.columns:
        mdata.obs[col] = obs[col].to_numpy() if col == "time" else obs[col].copy()

    time_effects_all = np.zeros((n_time_points, n_proteins + n_isotypes))
    time_effects_all[:, :n_proteins] = time_effects_prot
    mdata.uns[UNS_KEY] = {
        "driver_genes": {prot_names[j]: gene_names[drivers[j]].astype(str) for j in range(n_proteins)},
        "driver_kind": np.concatenate([kinds.astype(str), np.full(n_isotypes, "isotype")]).astype(str),
        "time_values": time_values,
        "time_effects": time_effects_all,
        "protein_background": background,
        "rna_time_genes": gene_names[time_genes].astype(str),
        "state_proportions": state_props,
        **({"program_weights": program_weights, "own_share": own_share} if structure == "programs" else {}),
        "params": {
            "n_obs": n_obs,
            "n_genes": n_genes,
            "n_proteins": n_proteins,
            "n_time_points": n_time_points,
            "n_states": n_states,
            "n_batches": n_batches,
            "n_drivers": n_drivers,
            "time_effect": time_effect,
            "density": -1.0 if density is None else float(density),
            "n_isotypes": n_isotypes,
            "sparse": bool(sparse),
            "structure": structure,
            "rng": seed,
        },
    }
    logger.info(
        "Simulated CITE-seq: %d cells, %d genes (%.1f%% non-zero), %d proteins + %d isotypes, %d time points.",
        n_obs,
        n_genes,
        100.0 * np.count_nonzero(rna_counts) / rna_counts.size,
        n_proteins,
        n_isotypes,
        n_time_points,
    )
    return mdata


def synthetic_empty_droplets(
    mdata: MuData,
    *,
    n_obs: int = 1000,
    rng: int | np.random.Generator | None = 0,
) -> ad.AnnData:
    """Simulate protein counts of empty droplets that match a :func:`~crossmodalnet.datasets.synthetic_cite` dataset.

    Empty droplets contain only the ambient background: for droplet :math:`e` and feature :math:`j` the
    counts are Poisson with rate ``protein_background[j]`` times a log-normal technical factor drawn like
    the cells' factor. Use them as the background for DSB normalisation.

    Parameters
    ----------
    mdata
        Output of :func:`~crossmodalnet.datasets.synthetic_cite`; must hold ``mdata["prot"]`` and ``mdata.uns["cmn_synthetic"]``.
    n_obs
        Number of empty droplets.
    rng
        Seed, :class:`numpy.random.Generator` or ``None`` (fresh entropy).

    Returns
    -------
    AnnData with ``n_obs`` droplets named ``empty_0000, ...`` and the same ``var`` as ``mdata["prot"]``.
    ``.X`` holds raw counts as ``float32``, sparse when ``mdata["prot"].X`` is sparse.

    Examples
    --------
    >>> import crossmodalnet as cmn
    >>> mdata = cmn.datasets.synthetic_cite(n_obs=200, n_genes=60, n_proteins=8, n_isotypes=2)
    >>> empty = cmn.datasets.synthetic_empty_droplets(mdata, n_obs=500)
    >>> empty.shape
    (500, 10)

    Notes
    -----
    :func:`muon.prot.pp.dsb` expects ``data_raw`` to hold both cells and empty droplets, e.g.
    ``anndata.concat([mdata["prot"], empty], merge="same")``.
    """
    n_obs = _check_int("n_obs", n_obs, 1)
    mod = getattr(mdata, "mod", None)
    if mod is None or "prot" not in mod:
        raise ValueError("`mdata` must be a MuData with a 'prot' modality (as returned by synthetic_cite).")
    truth = mdata.uns.get(UNS_KEY)
    if not isinstance(truth, dict) or "protein_background" not in truth:
        raise ValueError(f"`mdata.uns[{UNS_KEY!r}]['protein_background']` is missing; use synthetic_cite output.")
    prot = mod["prot"]
    background = np.asarray(truth["protein_background"], dtype=np.float64)
    if background.shape != (prot.n_vars,):
        raise ValueError(
            f"`protein_background` has shape {background.shape}, expected ({prot.n_vars},) to match mdata['prot']."
        )
    gen, _ = _resolve_rng(rng)
    tech = np.exp(gen.normal(0.0, _PROT_TECH_SD, n_obs))
    counts = gen.poisson(tech[:, None] * background[None, :])
    return ad.AnnData(
        _as_matrix(counts, sparse=sp.issparse(prot.X)),
        obs=pd.DataFrame(index=pd.Index(_names("empty_", n_obs, 4))),
        var=prot.var.copy(),
    )
