"""Hyper-parameter search with Ray Tune over the paper's Table S1 spaces (optional extra ``[tune]``).

Ray is imported only inside the functions, so ``import crossmodalnet.model`` works without it.
``scvi.autotune`` is not used: in scvi-tools 1.4 it cannot be imported without ``scib-metrics``
(and its trainable requires it even for a plain metric).
"""

from __future__ import annotations

import inspect
import math
import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import lightning.pytorch as pl
import numpy as np
import pandas as pd

from crossmodalnet._utils import get_layer
from crossmodalnet.train import FaderGradNormPlan

from ._crossmodalnet import CrossmodalNet
from ._presets import MONITORS

if TYPE_CHECKING:
    from mudata import MuData

_INSTALL_HINT = "Hyper-parameter search needs Ray Tune: pip install 'crossmodalnet-tools[tune]'"

#: Validation metrics logged by the training plan, with the direction that is better.
_METRIC_MODES = {
    "pearson_protein_validation": "max",
    "pearson_cell_validation": "max",
    "mse_validation": "min",
    "nlc_validation": "min",
}
# Arguments that define the train/validation/test split or the run itself: fixed for every trial,
# never searched (trials scored on different validation cells are not comparable).
_FIXED_ONLY = frozenset(
    {
        "max_epochs",
        "split",
        "holdout_time",
        "train_size",
        "validation_size",
        "split_seed",
        "early_stopping",
        "early_stopping_patience",
        "early_stopping_min_delta",
        "early_stopping_monitor",
        "accelerator",
        "devices",
    }
)


def _import_tune():
    """Import :mod:`ray.tune` or raise an :class:`ImportError` naming the extra."""
    try:
        from ray import tune
    except ImportError as err:
        raise ImportError(_INSTALL_HINT) from err
    return tune


def _named_parameters(function) -> set[str]:
    """Names of the parameters of ``function`` that can be passed by name (no ``*args``/``**kwargs``)."""
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return {n for n, p in inspect.signature(function).parameters.items() if p.kind not in variadic}


def _model_keys() -> set[str]:
    """Settings of the model: parameters of :class:`CrossmodalNet` (model kwargs of every trial)."""
    return _named_parameters(CrossmodalNet.__init__) - {"self", "mdata", "registry"}


def _plan_keys() -> set[str]:
    """Settings of the training plan: parameters of ``crossmodalnet.train.FaderGradNormPlan`` (``plan_kwargs``)."""
    return _named_parameters(FaderGradNormPlan.__init__) - {"self", "module"}


def _train_keys() -> set[str]:
    """Settings of the run and the data splitter (``batch_size``, ``split``...): the other parameters of ``train``."""
    return _named_parameters(CrossmodalNet.train) - {"self", "plan_kwargs", "datasplitter_kwargs"} - _plan_keys()


def _route(
    config: dict[str, Any], model_kwargs: dict[str, Any], train_kwargs: dict[str, Any], *, by_name: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model and ``train`` arguments of one configuration.

    Model settings go to the model, training-plan settings into ``plan_kwargs`` (or, with ``by_name``, to
    ``train``'s argument of the same name where it has one) and the rest (run and data-splitter settings)
    to ``train``.
    """
    model_keys = _model_keys()
    plan_keys = _plan_keys() - (_named_parameters(CrossmodalNet.train) if by_name else set())
    m_kwargs = {**model_kwargs, **{k: v for k, v in config.items() if k in model_keys}}
    t_kwargs = {**train_kwargs, **{k: v for k, v in config.items() if k not in model_keys | plan_keys}}
    plan = {k: v for k, v in config.items() if k in plan_keys}
    if plan:
        t_kwargs["plan_kwargs"] = {**(train_kwargs.get("plan_kwargs") or {}), **plan}
    return m_kwargs, t_kwargs


def table_s1_search_space() -> dict[str, Any]:
    r"""Return the random-search space of the paper's Table S1 :cite:p:`Yang2023` as Ray Tune domains.

    Keys are argument names of :class:`~crossmodalnet.model.CrossmodalNet` (model) and of
    ``crossmodalnet.train.FaderGradNormPlan`` (training plan);
    :func:`~crossmodalnet.model.tune_hyperparameters` routes each to the right call. Ray is imported
    when the function is called.

    ==============================  =================================  ============  ==========================================
    Table S1 hyper-parameter        argument                           default       search space
    ==============================  =================================  ============  ==========================================
    MLP batch normalisation         ``use_batch_norm``                 True          ``choice([True, False])``
    MLP learning rate               ``lr``                             1e-3          ``qloguniform(1e-4, 1e-1, 5e-5)``
    MLP weight decay                ``weight_decay``                   5e-6          ``choice([1e-7, 1e-6, 1e-5, 1e-4, 1e-3])``
    MLP1 dropout                    ``dropout_rate``                   0.05          ``choice([0, 0.05, 0.15, 0.3])``
    MLP1 latent dimension           ``n_latent``                       512           ``choice([256, 512])``
    Discriminator hidden dimension  ``n_hidden_discriminator``         128           ``choice([128, 32])``
    Discriminator regularisation    ``lambda_dis``                     0.5           ``quniform(0, 2, 0.1)``
    Discriminator gradient penalty  ``gradient_penalty``               0.4           ``quniform(0, 2, 0.1)``
    Discriminator learning rate     ``lr_discriminator``               0.0087        ``qloguniform(1e-4, 1e-1, 5e-5)``
    Discriminator weight decay      ``weight_decay_discriminator``     5e-5          ``choice([1e-7, 1e-6, 1e-5, 1e-4, 1e-3])``
    Discriminator learning step     ``learning_step``                  3             ``choice([3, 5, 10])``
    GradNorm weight learning rate   ``lr_gradnorm``                    0.01475       ``qloguniform(1e-4, 1e-1, 5e-5)``
    GradNorm alpha                  ``gradnorm_alpha``                 0.5           ``quniform(0, 3, 0.1)``
    ==============================  =================================  ============  ==========================================

    Returns
    -------
    Dictionary from argument name to a Ray Tune search domain (``ray.tune.choice``,
    ``ray.tune.qloguniform``, ``ray.tune.quniform``). Edit it (e.g. drop keys to keep them at their
    defaults, or add ``batch_size``) before passing it as ``search_space``.

    Notes
    -----
    The paper writes both weight decays as :math:`10^{\mathrm{randint}(-3, -7)}`; this is read as
    a power of ten with an exponent drawn uniformly from -7 to -3, both included, hence the
    ``choice`` over five values. The defaults 5e-6 and 5e-5 are not powers of ten and are not in
    these spaces.
    """
    tune = _import_tune()
    powers = [1e-7, 1e-6, 1e-5, 1e-4, 1e-3]
    return {
        "use_batch_norm": tune.choice([True, False]),
        "lr": tune.qloguniform(1e-4, 1e-1, 5e-5),
        "weight_decay": tune.choice(powers),
        "dropout_rate": tune.choice([0.0, 0.05, 0.15, 0.3]),
        "n_latent": tune.choice([256, 512]),
        "n_hidden_discriminator": tune.choice([128, 32]),
        "lambda_dis": tune.quniform(0.0, 2.0, 0.1),
        "gradient_penalty": tune.quniform(0.0, 2.0, 0.1),
        "lr_discriminator": tune.qloguniform(1e-4, 1e-1, 5e-5),
        "weight_decay_discriminator": tune.choice(powers),
        "learning_step": tune.choice([3, 5, 10]),
        "lr_gradnorm": tune.qloguniform(1e-4, 1e-1, 5e-5),
        "gradnorm_alpha": tune.quniform(0.0, 3.0, 0.1),
    }


def _resolve_arguments(
    mdata: MuData,
    search_space: dict[str, Any],
    metric: str,
    mode: str | None,
    model_kwargs: dict[str, Any] | None,
    train_kwargs: dict[str, Any],
) -> tuple[str, dict[str, Any]]:
    """Validate the arguments (no Ray needed); return the mode and the setup arguments of ``mdata``."""
    if metric not in _METRIC_MODES:
        raise ValueError(
            f"`metric` must be a validation metric logged by CrossmodalNet, one of {list(_METRIC_MODES)}; "
            f"got {metric!r}. Tuning is scored on validation cells only, never on training or test cells."
        )
    expected = _METRIC_MODES[metric]
    if mode is None:
        mode = expected
    elif mode != expected:
        raise ValueError(f"`mode={mode!r}` does not fit `metric={metric!r}`, where {expected!r} is better.")
    if not isinstance(search_space, dict) or not search_space:
        raise ValueError("`search_space` must be a non-empty dict from argument name to a Ray Tune domain or value.")
    model_keys, plan_keys, train_keys = _model_keys(), _plan_keys(), _train_keys()
    fixed = sorted(set(search_space) & _FIXED_ONLY)
    if fixed:
        raise ValueError(
            f"{fixed} cannot be searched: they fix the data split or the length of every trial, so trials "
            "would not be comparable. Pass them as fixed keyword arguments (e.g. `max_epochs=`, `split=`)."
        )
    unknown = sorted(set(search_space) - model_keys - plan_keys - train_keys)
    if unknown:
        raise ValueError(
            f"Unknown search-space argument(s) {unknown}; model arguments are {sorted(model_keys)}, "
            f"training-plan arguments {sorted(plan_keys)}, training arguments {sorted(train_keys - _FIXED_ONLY)}."
        )
    misplaced = sorted(set(train_kwargs) & model_keys)
    if misplaced:
        raise TypeError(f"{misplaced} are model arguments: pass them in `model_kwargs=`, not as training arguments.")
    model_kwargs = model_kwargs or {}
    bad_model = sorted(set(model_kwargs) - model_keys)
    if bad_model:
        raise TypeError(f"Unknown model argument(s) {bad_model} in `model_kwargs`; they are {sorted(model_keys)}.")
    fixed_plan = set(train_kwargs.get("plan_kwargs") or {})
    both = sorted(set(search_space) & (set(model_kwargs) | set(train_kwargs) | fixed_plan))
    if both:
        raise ValueError(
            f"{both} are both searched and fixed; drop them from `search_space` or from the fixed arguments."
        )
    manager = CrossmodalNet._get_most_recent_anndata_manager(mdata, required=False)
    if manager is None:
        raise ValueError(
            "Register the MuData first: `cmn.model.CrossmodalNet.setup_mudata(mdata, time_key=...)`; "
            "every trial repeats that registration."
        )
    return mode, dict(manager._get_setup_method_args()["setup_args"])


def _data_payload(mdata: MuData, setup_args: dict[str, Any]) -> dict[str, Any]:
    """The registered matrices, names and covariates: what a trial needs to rebuild the MuData.

    A MuData cannot be pickled for Ray's workers; these plain arrays travel through the object store.
    """
    rna_key, protein_key = setup_args["rna_key"], setup_args["protein_key"]
    covariates = [k for k in (setup_args.get("time_key"), setup_args.get("batch_key")) if k is not None]
    rna, prot = mdata.mod[rna_key], mdata.mod[protein_key]
    return {
        "rna_key": rna_key,
        "protein_key": protein_key,
        "rna": get_layer(rna, setup_args.get("rna_layer"), rna_key),
        "protein": get_layer(prot, setup_args.get("protein_layer"), protein_key),
        "obs_names": np.asarray(mdata.obs_names.astype(str)),
        "genes": np.asarray(rna.var_names.astype(str)),
        "proteins": np.asarray(prot.var_names.astype(str)),
        "obs": mdata.obs[covariates].copy(),
        "setup_args": {k: v for k, v in setup_args.items() if k not in ("rna_layer", "protein_layer")},
    }


def _rebuild_mdata(payload: dict[str, Any]) -> MuData:
    """Rebuild a registered MuData from :func:`_data_payload` inside a Ray worker."""
    from anndata import AnnData
    from mudata import MuData

    obs_names = pd.Index(payload["obs_names"])

    def _mod(X, names) -> AnnData:
        return AnnData(X=X, obs=pd.DataFrame(index=obs_names.copy()), var=pd.DataFrame(index=pd.Index(names)))

    mdata = MuData(
        {
            payload["rna_key"]: _mod(payload["rna"], payload["genes"]),
            payload["protein_key"]: _mod(payload["protein"], payload["proteins"]),
        }
    )
    for col in payload["obs"].columns:
        mdata.obs[col] = payload["obs"][col].array  # positional; keeps categories and their order
    with warnings.catch_warnings():
        # the same warnings (raw counts, constant proteins) were already shown for the user's MuData
        warnings.simplefilter("ignore", UserWarning)
        CrossmodalNet.setup_mudata(mdata, **payload["setup_args"])
    return mdata


class _TuneReportCallback(pl.Callback):
    """Report the validation metrics of every epoch to Ray Tune (never training or test scores)."""

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Send the epoch's validation metrics to ``ray.tune.report``."""
        if trainer.sanity_checking:
            return
        from ray import tune

        logged = trainer.callback_metrics
        report = {name: float(logged[name]) for name in _METRIC_MODES if name in logged}
        if report:
            report["epoch"] = int(trainer.current_epoch)
            tune.report(report)


def _trial(
    config: dict[str, Any],
    *,
    payload: dict[str, Any],
    model_kwargs: dict[str, Any],
    train_kwargs: dict[str, Any],
    seed: int,
    n_threads: int,
) -> None:
    """Ray Tune function trainable: build a model from ``config``, train it and report each epoch."""
    import torch
    from scvi import settings

    torch.set_num_threads(max(1, n_threads))
    settings.seed = seed  # same initial weights in every trial: configurations differ, not luck
    mdata = _rebuild_mdata(payload)
    m_kwargs, t_kwargs = _route(config, model_kwargs, train_kwargs)
    t_kwargs["callbacks"] = [*t_kwargs.get("callbacks", []), _TuneReportCallback()]
    model = CrossmodalNet(mdata, **m_kwargs)
    model.train(**t_kwargs)


def _plain(value: Any) -> Any:
    """NumPy scalars (as Ray's samplers return them) as Python scalars."""
    return value.item() if isinstance(value, np.generic) else value


def _short_error(error: BaseException) -> str:
    """The exception a trial raised (not Ray's wrapper), on one line; the traceback is in the experiment folder."""
    cause = getattr(error, "cause", None) or error
    lines = [line for line in str(cause).strip().splitlines() if line.strip()]
    return f"{type(cause).__name__}: {lines[-1] if lines else ''}"


def _results_frame(result_grid, *, search_keys: list[str], metric: str, mode: str) -> pd.DataFrame:
    """One row per trial: its best epoch by ``metric`` (validation only), the other metrics there, its config."""
    rows = []
    for result in result_grid:
        history = result.metrics_dataframe
        row: dict[str, Any] = {"trial_id": result.metrics.get("trial_id") if result.metrics else None}
        if history is not None and metric in history and history[metric].notna().any():
            scores = history[metric].astype(float)
            best = history.loc[scores.idxmax() if mode == "max" else scores.idxmin()]
            row.update({name: float(best[name]) for name in _METRIC_MODES if name in history})
            row["best_epoch"] = int(best["epoch"])
            row["n_epochs"] = int(history["epoch"].max()) + 1
            row["trial_id"] = best.get("trial_id", row["trial_id"])
        else:
            row.update({metric: math.nan, "best_epoch": pd.NA, "n_epochs": 0})
        row.update({key: _plain(result.config.get(key)) for key in search_keys})
        row["_config"] = {key: _plain(result.config.get(key)) for key in search_keys}
        row["error"] = None if result.error is None else _short_error(result.error)
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame["best_epoch"] = frame["best_epoch"].astype("Int64")
    first = ["trial_id", metric] + [m for m in _METRIC_MODES if m != metric and m in frame]
    frame = frame[first + [c for c in frame.columns if c not in first]]
    frame = frame.sort_values(metric, ascending=mode == "min", na_position="last", kind="stable")
    return frame.reset_index(drop=True)


def tune_hyperparameters(
    mdata: MuData,
    *,
    search_space: dict[str, Any] | None = None,
    num_samples: int = 10,
    metric: Literal[
        "pearson_protein_validation", "pearson_cell_validation", "mse_validation", "nlc_validation"
    ] = "pearson_protein_validation",
    mode: Literal["max", "min"] | None = None,
    max_epochs: int = 500,
    scheduler: Literal["asha", "fifo"] | Any = "asha",
    scheduler_kwargs: dict[str, Any] | None = None,
    search_alg: Any = None,
    seed: int = 0,
    resources: dict[str, float] | None = None,
    max_concurrent_trials: int | None = None,
    model_kwargs: dict[str, Any] | None = None,
    logging_dir: str | os.PathLike | None = None,
    experiment_name: str | None = None,
    verbose: int = 0,
    **train_kwargs: Any,
) -> pd.DataFrame:
    """Search CrossmodalNet's hyper-parameters with Ray Tune, scored on validation cells only.

    Every trial builds a :class:`~crossmodalnet.model.CrossmodalNet` from one sampled configuration,
    trains it with :meth:`~crossmodalnet.model.CrossmodalNet.train` and reports the validation
    metrics of each epoch. All trials use the same train/validation/test split (``split``,
    ``holdout_time``, ``train_size``, ``validation_size`` and ``split_seed``, fixed) and the same
    initial seed; the test cells are never trained on or scored, so they stay untouched for the
    final evaluation of the chosen configuration. Needs the optional extra:
    ``pip install 'crossmodalnet-tools[tune]'``.

    Parameters
    ----------
    mdata
        MuData registered with :meth:`~crossmodalnet.model.CrossmodalNet.setup_mudata`. It is not
        modified; its registered matrices are sent to Ray's workers, which register them again.
    search_space
        Dictionary from argument name to a Ray Tune domain (``ray.tune.choice``,
        ``ray.tune.loguniform``...) or a fixed value. Each name is routed where it belongs: a
        parameter of :class:`~crossmodalnet.model.CrossmodalNet` to the model, one of
        ``crossmodalnet.train.FaderGradNormPlan`` to ``train(plan_kwargs=...)``, any other
        (``batch_size``...) to :meth:`~crossmodalnet.model.CrossmodalNet.train`. Defaults to
        :func:`~crossmodalnet.model.table_s1_search_space`. Split arguments and ``max_epochs`` cannot
        be searched.
    num_samples
        Number of configurations to try (the paper: 100).
    metric
        Validation metric to optimise, as logged by the training plan. With a Pearson metric the
        model's early stopping and best-epoch restoration follow the same metric (unless
        ``early_stopping_monitor`` is given); with ``"mse_validation"`` or ``"nlc_validation"``
        they still follow validation per-protein Pearson.
    mode
        ``"max"`` or ``"min"``; inferred from ``metric`` (Pearson: max, MSE and NLC: min).
    max_epochs
        Maximum epochs per trial (the paper: 500, with early stopping after 10 epochs without
        improvement, as :meth:`~crossmodalnet.model.CrossmodalNet.train` does by default).
    scheduler
        ``"asha"`` (asynchronous successive halving: stops trials that are behind at epochs 10, 30,
        90...; the default), ``"fifo"`` (every trial runs to its end, as the paper's random search)
        or a Ray Tune scheduler object.
    scheduler_kwargs
        Overrides for the ASHA scheduler (defaults: ``grace_period=min(10, max_epochs)``,
        ``reduction_factor=3``, ``max_t=max_epochs``).
    search_alg
        A Ray Tune search algorithm; ``None`` samples at random (the paper's random search), seeded
        with ``seed``.
    seed
        Seed of the random search, of every trial's weights (``scvi.settings.seed``) and, unless
        ``split_seed`` is given, of the data split.
    resources
        Resources per trial, e.g. ``{"cpu": 2}`` or ``{"cpu": 1, "gpu": 0.5}``; default
        ``{"cpu": 1}``. Each trial uses that many PyTorch threads; Ray runs as many trials at once
        as the resources of its cluster (by default this machine) allow.
    max_concurrent_trials
        Upper bound on trials running at once (e.g. to bound memory: every running trial holds a
        copy of the registered matrices).
    model_kwargs
        Fixed arguments of the model for every trial (e.g. ``{"input_reduction": "svd"}``).
    logging_dir
        Folder of Ray Tune's experiment records; defaults to
        ``<scvi.settings.logging_dir>/crossmodalnet_tune``.
    experiment_name
        Sub-folder name of this search; defaults to ``crossmodalnet_<date>_<time>``.
    verbose
        Ray Tune's console verbosity (0: silent, 1: status updates, 2: results as well).
    **train_kwargs
        Fixed arguments of :meth:`~crossmodalnet.model.CrossmodalNet.train` for every trial (e.g.
        ``split="holdout_time", holdout_time=3, batch_size=128``), including ``plan_kwargs``,
        ``datasplitter_kwargs`` and Lightning trainer arguments.

    Returns
    -------
    One row per trial, best first: ``trial_id``, the best value of ``metric`` over the trial's
    epochs, the other validation metrics at that epoch, ``best_epoch``, ``n_epochs`` (epochs run
    before early stopping or the scheduler stopped it), the sampled value of every searched
    argument and ``error`` (``None`` unless the trial failed). ``DataFrame.attrs`` holds
    ``"best_config"`` (the winning sampled values), ``"best_model_kwargs"`` and
    ``"best_train_kwargs"`` (all arguments to refit it:
    ``CrossmodalNet(mdata, **attrs["best_model_kwargs"]).train(**attrs["best_train_kwargs"])``),
    ``"metric"``, ``"mode"`` and ``"experiment_path"``.

    Raises
    ------
    ImportError
        If Ray Tune is not installed.
    RuntimeError
        If every trial failed.

    Examples
    --------
    >>> import crossmodalnet as cmn
    >>> mdata = cmn.datasets.synthetic_cite(n_obs=500, n_genes=200, n_proteins=10)
    >>> cmn.pp.log_normalize(mdata)
    >>> cmn.pp.clr(mdata)
    >>> cmn.model.CrossmodalNet.setup_mudata(mdata, time_key="time")
    >>> trials = cmn.model.tune_hyperparameters(mdata, num_samples=4, max_epochs=20)  # doctest: +SKIP
    >>> trials.attrs["best_config"]  # doctest: +SKIP
    """
    tune = _import_tune()
    import ray

    if search_space is None:
        search_space = table_s1_search_space()
    train_kwargs = dict(train_kwargs)
    mode, setup_args = _resolve_arguments(mdata, search_space, metric, mode, model_kwargs, train_kwargs)
    if num_samples < 1:
        raise ValueError(f"`num_samples` must be at least 1, got {num_samples}.")
    if max_epochs < 1:
        raise ValueError(f"`max_epochs` must be at least 1, got {max_epochs}.")
    model_kwargs = dict(model_kwargs or {})
    train_kwargs["max_epochs"] = max_epochs
    train_kwargs.setdefault("split_seed", seed)
    if metric in MONITORS:
        train_kwargs.setdefault("early_stopping_monitor", metric)
    train_kwargs.setdefault("enable_progress_bar", False)
    resources = dict(resources or {"cpu": 1})
    n_threads = max(1, int(resources.get("cpu", 1)))
    if "gpu" not in resources or not resources["gpu"]:
        train_kwargs.setdefault("accelerator", "cpu")

    if scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        kwargs = {"grace_period": min(10, max_epochs), "reduction_factor": 3, "max_t": max_epochs}
        kwargs.update(scheduler_kwargs or {})
        # one report per epoch: Ray's `training_iteration` counts epochs
        scheduler = ASHAScheduler(time_attr="training_iteration", **kwargs)
    elif scheduler == "fifo":
        from ray.tune.schedulers import FIFOScheduler

        scheduler = FIFOScheduler()
    elif isinstance(scheduler, str):
        raise ValueError(f"`scheduler` must be 'asha', 'fifo' or a Ray Tune scheduler, got {scheduler!r}.")
    if search_alg is None:
        from ray.tune.search import BasicVariantGenerator

        search_alg = BasicVariantGenerator(random_state=seed)

    if logging_dir is None:
        from scvi import settings

        logging_dir = Path(settings.logging_dir) / "crossmodalnet_tune"
    storage = Path(os.fspath(logging_dir)).expanduser().resolve()
    storage.mkdir(parents=True, exist_ok=True)
    experiment_name = experiment_name or time.strftime("crossmodalnet_%Y%m%d_%H%M%S")

    # before `with_parameters`, whose `ray.put` would otherwise start Ray with its defaults
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(include_dashboard=False, log_to_driver=verbose > 0, configure_logging=verbose > 0)
    try:
        trainable = tune.with_parameters(
            _trial,
            payload=_data_payload(mdata, setup_args),
            model_kwargs=model_kwargs,
            train_kwargs=train_kwargs,
            seed=seed,
            n_threads=n_threads,
        )
        tuner = tune.Tuner(
            tune.with_resources(trainable, resources),
            param_space=search_space,
            tune_config=tune.TuneConfig(
                metric=metric,
                mode=mode,
                scheduler=scheduler,
                search_alg=search_alg,
                num_samples=num_samples,
                max_concurrent_trials=max_concurrent_trials,
            ),
            run_config=tune.RunConfig(name=experiment_name, storage_path=str(storage), verbose=verbose),
        )
        result_grid = tuner.fit()
    finally:
        if started_ray:
            ray.shutdown()

    search_keys = list(search_space)
    frame = _results_frame(result_grid, search_keys=search_keys, metric=metric, mode=mode)
    if frame[metric].isna().all():
        errors = [e for e in frame["error"] if e]
        raise RuntimeError(
            f"No trial reported {metric!r}"
            + (f"; first error: {errors[0]}" if errors else "")
            + f" (logs in {storage / experiment_name})."
        )
    best = frame.pop("_config").iloc[0]
    fixed_train = {k: v for k, v in train_kwargs.items() if k not in ("callbacks", "enable_progress_bar")}
    # the refit call names each plan setting that `train` takes by name, as a user would
    best_model_kwargs, best_train_kwargs = _route(best, model_kwargs, fixed_train, by_name=True)
    frame.attrs.update(
        {
            "best_config": best,
            "best_model_kwargs": best_model_kwargs,
            "best_train_kwargs": best_train_kwargs,
            "metric": metric,
            "mode": mode,
            "experiment_path": str(storage / experiment_name),
        }
    )
    return frame
