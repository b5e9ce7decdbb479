"""Query mapping (scArches-style surgery): a new batch embedding learned from a query's few measured proteins."""

from __future__ import annotations

import copy
import logging
import random
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import torch
from mudata import MuData
from scipy import sparse

from crossmodalnet._settings import settings as cmn_settings
from crossmodalnet._utils import (
    check_level,
    get_layer,
    get_modality,
    looks_like_counts,
    missing_obs_column_message,
    resolve_obs_column,
)
from crossmodalnet.nn import masked_mse

from ._docstrings import docs
from ._save_load import without_messages
from ._uncertainty import conformal_quantile

if TYPE_CHECKING:
    from typing import Self

logger = logging.getLogger(__name__)

_CALLER = "CrossmodalNet.map_query"
# the warning of `_batch_codes` for the query cells predicted with the average embedding (expected here)
_UNSEEN_BATCH_MESSAGE = "batch categories the model was not trained on"
# held-out values needed for a conformal quantile at level 0.9 ((n + 1) · 0.9 ≤ n)
_MIN_CALIBRATION_VALUES = 10


def _first(names, n: int = 10) -> str:
    names = [str(x) for x in names]
    return repr(names[:n])[:-1] + (f", ... ({len(names)} in all)]" if len(names) > n else "]")


class QueryMappingMixin:
    """Map a query with a few measured proteins onto a trained model: :meth:`map_query`."""

    query_: dict | None = None

    def _copy_without_data(self) -> Self:
        """A new model with this model's registry, settings, saved attributes and weights, and no data attached.

        What :meth:`load` builds from a saved folder, without the disk; the copy shares no tensor
        or attribute with this model.
        """
        attrs = {name: value for name, value in self._get_user_attributes() if name.endswith("_")}
        registry = copy.deepcopy(attrs.pop("registry_"))
        init_params = copy.deepcopy(attrs.pop("init_params_"))
        kwargs = {k: v for group in init_params["kwargs"].values() for k, v in group.items()}
        # building a model seeds torch, NumPy and Python (cmn.settings.seed): leave the caller's streams alone
        np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002 (the legacy global stream seed_everything sets)
        try:
            with torch.random.fork_rng(devices=[]):
                new = type(self)(None, registry=registry, **init_params["non_kwargs"], **kwargs)
        finally:
            np.random.set_state(np_state)  # noqa: NPY002
            random.setstate(py_state)
        # the reference's init record: one built without data would name `mdata` (None), which load() passes again
        new.init_params_ = init_params
        for name, value in attrs.items():
            setattr(new, name, copy.deepcopy(value))
        new.module.load_state_dict({k: v.detach().clone() for k, v in self.module.state_dict().items()})
        new.to_device(self.device)
        new.module.eval()
        return new

    def _query_proteins(self, mdata: MuData, protein_key: str) -> tuple[np.ndarray, list[str], list[str]]:
        """Observed proteins of every cell of ``mdata`` (cells × model proteins, NaN = not measured), used and ignored names."""
        layer = self.get_setup_arg("protein_layer")
        if protein_key not in mdata.mod:
            raise ValueError(
                f"{_CALLER}: the query has no protein modality {protein_key!r} (modalities: {list(mdata.mod)}); mapping "
                "learns the query's batch embedding from its measured proteins. Pass `protein_key=`, or predict "
                "without mapping (`model.predict_protein(mdata)`: new batches get the average batch embedding)."
            )
        prot = mdata.mod[protein_key]
        names = pd.Index(np.asarray(prot.var_names).astype(str))
        model_proteins = pd.Index(self.protein_names)
        used = [p for p in names if p in set(model_proteins)]
        ignored = [p for p in names if p not in set(model_proteins)]
        if not used:
            raise ValueError(
                f"{_CALLER}: no protein of the query's panel (`mdata[{protein_key!r}]`: {_first(names)}) is one the "
                f"model predicts ({_first(model_proteins, 5)}): there is nothing to learn its batch embedding from. "
                "Rename the query's proteins to the model's names (e.g. `cmn.pp.harmonize_proteins`), or predict "
                "without mapping."
            )
        if ignored:
            logger.info(
                "%s: %d query protein(s) the model does not know are ignored: %s",
                _CALLER,
                len(ignored),
                _first(ignored),
            )
        if layer is not None and layer not in prot.layers:
            raise KeyError(
                f"{_CALLER}: `mdata[{protein_key!r}]` has no layer {layer!r}, the protein layer the model was trained on."
            )
        X = get_layer(prot, layer, protein_key)
        X = X.toarray() if sparse.issparse(X) else np.asarray(X)
        block = X[:, names.get_indexer(used)].astype(np.float64)
        if np.isinf(block).any():
            raise ValueError(
                f"{_CALLER}: `mdata[{protein_key!r}]` holds infinite values; use NaN for values a cell did not measure."
            )
        if looks_like_counts(np.nan_to_num(block)):
            logger.warning(
                "%s: `mdata[%r]` looks like raw ADT counts; the batch embedding is fitted on the scale the model "
                "predicts. Normalise the query's proteins as the reference's were (e.g. `cmn.pp.clr`).",
                _CALLER,
                protein_key,
            )
        out = np.full((mdata.n_obs, self.n_proteins), np.nan)
        rows = prot.obs_names.get_indexer(mdata.obs_names)
        have = rows >= 0
        out[np.ix_(np.flatnonzero(have), model_proteins.get_indexer(used))] = block[rows[have]]
        return out, used, ignored

    def _query_batches(self, mdata: MuData) -> tuple[str, np.ndarray, list[str]]:
        """The registered batch column of the query, each cell's category (str) and the categories, in order."""
        batch_key = self.get_setup_arg("batch_key")
        if batch_key is None:
            raise ValueError(
                f"{_CALLER}: the model was set up without a `batch_key`, so it reads no batch of a query cell; "
                "set up and train the reference with `setup_mudata(..., batch_key=...)` to map queries."
            )
        column = resolve_obs_column(mdata, batch_key)
        if column is None:
            raise KeyError(f"{_CALLER}: " + missing_obs_column_message(mdata, batch_key, "batch"))
        values = mdata.obs[column]
        if values.isna().any():
            raise ValueError(
                f"{_CALLER}: `mdata.obs[{column!r}]` has {int(values.isna().sum())} missing value(s); give every query "
                "cell its batch (e.g. the donor or study)."
            )
        labels = values.astype(str).to_numpy()
        categories = list(pd.unique(labels))
        clash = sorted(set(categories) & set(np.asarray(self.batch_categories).astype(str)))
        clash += sorted(set(categories) & set(self.query_batch_categories))
        if clash:
            raise ValueError(
                f"{_CALLER}: the query's batch categories {clash} already exist in the model, so the query would "
                "share (and not get) their embedding. Give the query's cells a new label in "
                f"`mdata.obs[{column!r}]`, or predict without mapping (`model.predict_protein(mdata)`)."
            )
        return column, labels, categories

    def _check_query_rna(self, mdata: MuData) -> None:
        rna_key = self.get_setup_arg("rna_key")
        rna = get_modality(mdata, rna_key, _CALLER, role="RNA")
        genes = pd.Index(np.asarray(rna.var_names).astype(str))
        n_shared = int(genes.isin(self.gene_names).sum())
        if n_shared == 0:
            raise ValueError(
                f"{_CALLER}: no gene of `mdata[{rna_key!r}]` ({_first(genes, 5)}) is one of the model's "
                f"{self.n_genes} genes ({_first(self.gene_names, 5)}): the query's RNA cannot be encoded. Check "
                "the gene names (symbols vs Ensembl IDs: `cmn.pp.harmonize_genes(mdata, model, gene_id_column=...)`)."
            )
        if not genes.equals(pd.Index(self.gene_names)):
            raise ValueError(
                f"{_CALLER}: `mdata[{rna_key!r}]` has {n_shared} of the model's {self.n_genes} genes, not all of them "
                "in the model's order. Align them first with `cmn.pp.harmonize_genes(mdata, model)`."
            )

    def _uncertainty_state(self, batch_size: int) -> tuple[dict | None, str]:
        """Return the current uncertainty calibration of this model (computed on a shallow copy if needed) and where it came from."""
        state = self.uncertainty_
        if state is not None and state.get("n_epochs") == self._n_epochs_trained() and "reference_prediction" in state:
            return state, "the reference's"
        if self.adata is None:
            return None, (
                "the reference is not calibrated and has no training data attached (call "
                "`model.calibrate_uncertainty()` on the reference before saving it)"
            )
        # calibrate a shallow copy: the reference keeps its attributes as they were
        shadow = copy.copy(self)
        shadow.calibrate_uncertainty(batch_size=batch_size)
        return shadow.uncertainty_, "calibrated now on the reference's validation cells"

    @docs.dedent
    def map_query(
        self,
        mdata: MuData,
        *,
        protein_key: str | None = None,
        max_epochs: int = 200,
        lr: float = 0.05,
        batch_size: int = 1024,
        calibration_fraction: float = 0.2,
        level: float = 0.9,
        embedding_space: Literal["span", "free"] = "span",
    ) -> Self:
        """Map a query that measured a few proteins: a new model with a batch embedding learned for each query batch.

        scArches-style architecture surgery :cite:p:`Lotfollahi2022`: each new batch category of the
        query (the model's registered ``batch_key`` column of ``mdata.obs``) gets its own batch
        embedding row, fitted to the proteins the query measured, with every other parameter frozen
        (encoder, decoder, time embeddings, trained batch embeddings, discriminators and the linear
        path). The rows start from the average of the trained batch embeddings (what an unseen batch
        gets without mapping), move within ``embedding_space``, and are fitted by Adam on the mean squared error over the measured
        values (NaN = not measured; only proteins the model predicts), on the scale of the model's
        loss, with the module in evaluation mode (no dropout). With the same ``cmn.settings.seed``,
        data and arguments the result is identical.

        The reference model is not changed. The returned model has no data attached: pass the query
        to :meth:`~crossmodalnet.model.CrossmodalNet.predict_protein` or
        :func:`crossmodalnet.tl.predict_protein`; cells of the mapped categories then get their own
        embedding and the model's other proteins are predicted with it. Save and load it as any model.

        Calibration: ``calibration_fraction`` of each category's cells with measured proteins are held
        out of the fit. Intervals of :meth:`~crossmodalnet.model.CrossmodalNet.predict_protein`
        (``return_uncertainty=True``, calibrated on the reference's validation cells) are checked on
        their measured values: if fewer than ``level`` of them fall inside the ``level`` interval, one
        split-conformal multiplier computed on those values widens the intervals of every protein and
        every level (the stored non-conformity scores are scaled by it). The proteins the query did not
        measure get the multiplier of the measured ones, extrapolated; nothing checks their coverage.
        The coverage before and after is measured on the same held-out values that give the multiplier.
        The held-out cells also give the error of the mapped and of the average embedding.

        Parameters
        ----------
        mdata
            The query: RNA with the model's genes (same names and order; :func:`crossmodalnet.pp.harmonize_genes`),
            the registered batch column in ``mdata.obs`` with labels the model was not trained on, and
            a protein modality on the scale the model predicts (e.g. :func:`crossmodalnet.pp.clr`), with
            the proteins its panel measured; NaN marks values a cell did not measure. It is not changed.
        protein_key
            The query's protein modality; defaults to the model's.
        max_epochs
            Passes over the query's fitting cells.
        lr
            Adam learning rate of the new embedding rows.
        %(forward_batch_size)s Also the mini-batch of the fit.
        calibration_fraction
            Fraction of each category's cells with measured proteins held out of the fit, to check and
            rescale the intervals and to score the mapping (0: no check; every cell is fitted).
        level
            Nominal coverage of the interval that is checked and rescaled.
        embedding_space
            Where each new row is sought. ``"span"`` (default): the average of the trained batch
            embeddings plus a combination of their deviations from it, one coefficient per trained
            batch; a query batch is then a mix of the reference's batch effects, a prior that keeps the
            fit well posed when the query measured a few proteins and the embedding has hundreds of
            dimensions (with one trained batch the span is a point: ``"free"`` is used). ``"free"``:
            every coordinate of the row is fitted (scArches' choice; on a synthetic query with 4 of 12
            proteins measured it fitted the measured ones better and predicted the others worse).

        Returns
        -------
        A new :class:`~crossmodalnet.model.CrossmodalNet` whose ``query_`` dict records the mapping:
        ``batch_key``, ``embedding_space``, ``batch_categories`` (the mapped categories, in the order of their rows in
        ``module.query_batch_embedding``), ``unmapped_batch_categories`` (query categories without any
        measured protein: they keep the average embedding), ``n_cells_fitted`` and ``n_cells_held_out``
        (per mapped category), ``proteins_used`` (measured in the fitted cells), ``proteins_ignored`` (query proteins the model does
        not know), ``max_epochs``, ``lr``, ``seed``, ``loss`` (per epoch, on the loss scale),
        ``heldout_mse_average`` and ``heldout_mse_mapped`` (over the held-out measured values) and
        ``calibration`` (``level``, ``n_cells``, ``n_values``, ``coverage_before``, ``multiplier``,
        ``coverage_after``, ``source``; or ``skipped`` with the reason).

        Examples
        --------
        >>> query_model = model.map_query(query)  # query.obs["batch"] holds a new label, e.g. "donor_7"
        >>> proteins = query_model.predict_protein(query)
        >>> query_model.query_["calibration"]["coverage_after"]
        """
        self._check_if_trained(warn=False)
        if not isinstance(mdata, MuData):
            raise TypeError(f"{_CALLER}: expected a MuData, got {type(mdata).__name__}.")
        if not mdata.obs_names.is_unique:
            raise ValueError(f"{_CALLER}: the query's cell names are not unique; run `mdata.obs_names_make_unique()`.")
        if self.query_batch_categories.size:
            raise ValueError(
                f"{_CALLER}: this model was already mapped onto a query ({self.query_batch_categories.tolist()}); "
                "map every query onto the reference model."
            )
        for name, value in (("max_epochs", max_epochs), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{_CALLER}: `{name}` must be a positive integer, got {value!r}.")
        if not lr > 0:
            raise ValueError(f"{_CALLER}: `lr` must be positive, got {lr!r}.")
        if not 0.0 <= float(calibration_fraction) < 1.0:
            raise ValueError(f"{_CALLER}: `calibration_fraction` must be in [0, 1), got {calibration_fraction!r}.")
        level = check_level(level)
        if embedding_space not in ("span", "free"):
            raise ValueError(f"{_CALLER}: `embedding_space` must be 'span' or 'free', got {embedding_space!r}.")
        if embedding_space == "span" and len(self.batch_categories) < 2:
            logger.info("%s: the model has one trained batch, whose span is a point: fitting free rows", _CALLER)
            embedding_space = "free"
        protein_key = self.get_setup_arg("protein_key") if protein_key is None else protein_key

        column, labels, categories = self._query_batches(mdata)
        self._check_query_rna(mdata)
        observed, used, ignored = self._query_proteins(mdata, protein_key)
        rna = self._rna_input(mdata)
        measured_cell = np.isfinite(observed).any(axis=1) & (rna.rows >= 0)

        seed = cmn_settings.seed
        gen = np.random.default_rng(seed)
        mapped, unmapped, fit_pos, hold_pos, n_fit, n_hold = [], [], [], [], [], []
        for cat in categories:
            cells = np.flatnonzero((labels == cat) & measured_cell)
            if cells.size == 0:
                unmapped.append(cat)
                continue
            cells = gen.permutation(cells)
            k = min(int(round(calibration_fraction * cells.size)), cells.size - 1)
            mapped.append(cat)
            hold_pos.append(np.sort(cells[:k]))
            fit_pos.append(np.sort(cells[k:]))
            n_fit.append(cells.size - k)
            n_hold.append(k)
        if unmapped:
            logger.warning(
                "%s: %d query batch categor%s without any measured protein of the model (%s) keep the average of the "
                "trained batch embeddings",
                _CALLER,
                len(unmapped),
                "y" if len(unmapped) == 1 else "ies",
                _first(unmapped),
            )

        query = self._copy_without_data()
        record = {
            "batch_key": str(column),
            "batch_categories": [str(c) for c in mapped],
            "unmapped_batch_categories": [str(c) for c in unmapped],
            "n_cells_fitted": [int(n) for n in n_fit],
            "n_cells_held_out": [int(n) for n in n_hold],
            "proteins_used": list(used),
            "proteins_ignored": list(ignored),
            "max_epochs": int(max_epochs),
            "lr": float(lr),
            "seed": seed,
            "loss": [],
        }
        if not mapped:
            record["calibration"] = {"skipped": "no query category measured any protein of the model"}
            query.query_ = record
            return query

        fit = np.concatenate(fit_pos)
        names = pd.Index(self.protein_names)
        record["proteins_used"] = [str(p) for p in names[np.isfinite(observed[fit]).any(axis=0)]]
        record["embedding_space"] = embedding_space
        codes = np.concatenate([np.full(len(p), i) for i, p in enumerate(fit_pos)])
        with torch.random.fork_rng(devices=[] if query.device.type == "cpu" else [query.device]):
            if seed is not None:
                torch.manual_seed(seed)
            losses, rows = self._fit_query_rows(
                query,
                mdata,
                rna,
                fit,
                codes,
                observed[fit],
                len(mapped),
                max_epochs,
                lr,
                batch_size,
                seed,
                embedding_space,
            )
        query.module.add_query_batches(rows)
        record["loss"] = losses
        query.query_ = record

        hold = np.concatenate(hold_pos) if hold_pos else np.zeros(0, dtype=np.int64)
        record["calibration"] = self._calibrate_query(query, mdata, hold, observed, level, batch_size)
        logger.info(
            "%s: mapped %d query batch categor%s (%s) on %d cells and %d protein(s); held out %d cells",
            _CALLER,
            len(mapped),
            "y" if len(mapped) == 1 else "ies",
            _first(mapped, 5),
            int(sum(n_fit)),
            len(used),
            int(sum(n_hold)),
        )
        return query

    def _fit_query_rows(
        self, query, mdata, rna, fit, codes, target, n_rows, max_epochs, lr, batch_size, seed, space
    ) -> tuple[list[float], torch.Tensor]:
        """Fit ``n_rows`` batch embedding rows of ``query.module`` (all else frozen) to the measured ``target``."""
        module = query.module
        module.eval()
        device = query.device
        w_rows, w_codes = self._cell_time_weights(mdata)
        time_table = module.covariate_embeddings[0].weight.detach()
        X = rna.reader()
        zs, bases, linears = [], [], []
        order = []
        with torch.no_grad():
            for pos, x in self._iter_batches(X, rna.rows[fit], batch_size, allow_sparse=module.sparse_input):
                idx = torch.from_numpy(w_codes[fit[pos]])
                w = w_rows.index_select(0, idx).to(device)
                x = x.to(device)
                zs.append(module.inference(x)["z"])
                bases.append(w @ time_table)
                linears.append(module.linear_prediction(x, w) if module.linear_path else None)
                order.append(pos)
        order = np.concatenate(order)
        z, base = torch.cat(zs), torch.cat(bases)
        linear = None if linears[0] is None else torch.cat(linears)
        y = torch.as_tensor(target[order], dtype=z.dtype, device=device)
        with torch.no_grad():
            y = module.scale_protein(y)
        cell_row = torch.as_tensor(codes[order], dtype=torch.long, device=device)
        trained = module.covariate_embeddings[1].weight.detach()
        start = trained.mean(dim=0, keepdim=True)
        if space == "span":
            # rows = average + a combination of the trained rows' deviations from it
            directions = trained - start
            coef = torch.zeros(n_rows, trained.shape[0], device=device, requires_grad=True)
            free = [coef]

            def current() -> torch.Tensor:
                return start + coef @ directions
        else:
            delta = torch.zeros(n_rows, trained.shape[1], device=device, requires_grad=True)
            free = [delta]

            def current() -> torch.Tensor:
                return start + delta

        optimizer = torch.optim.Adam(free, lr=lr)
        generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
        frozen = [p for p in module.parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(requires_grad=False)
        losses = []
        try:
            for _ in range(max_epochs):
                total, n = 0.0, 0
                for chunk in torch.randperm(z.shape[0], generator=generator).split(batch_size):
                    chunk = chunk.to(device)
                    lin = None if linear is None else linear[chunk]
                    pred = module.generative(z[chunk], base[chunk] + current()[cell_row[chunk]], lin)["protein_scaled"]
                    loss = masked_mse(pred, y[chunk])
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    total += float(loss.detach()) * chunk.numel()
                    n += chunk.numel()
                losses.append(total / n)
        finally:
            for p in frozen:
                p.requires_grad_(requires_grad=True)
        return losses, current().detach()

    def _calibrate_query(self, query, mdata, hold, observed, level, batch_size) -> dict:
        """Held-out errors of the mapping and a check (and rescale) of the query model's intervals."""
        if hold.size == 0:
            return {"skipped": "no held-out query cells (`calibration_fraction=0` or one cell per category)"}
        sub = self._cell_subset(mdata, hold)
        y = pd.DataFrame(observed, index=mdata.obs_names).loc[sub.obs_names].to_numpy()
        measured = np.isfinite(y)
        with without_messages("crossmodalnet.model._inference", _UNSEEN_BATCH_MESSAGE):
            average = self.predict_protein(sub, batch_size=batch_size).to_numpy(np.float64)
        mapped = query.predict_protein(sub, batch_size=batch_size).to_numpy(np.float64)
        query.query_["heldout_mse_average"] = float(np.mean((average - y)[measured] ** 2))
        query.query_["heldout_mse_mapped"] = float(np.mean((mapped - y)[measured] ** 2))
        if measured.sum() < _MIN_CALIBRATION_VALUES:
            return {"skipped": f"fewer than {_MIN_CALIBRATION_VALUES} held-out measured values"}
        state, source = self._uncertainty_state(batch_size)
        if state is None:
            logger.warning("%s: the query's intervals were not checked: %s", _CALLER, source)
            return {"skipped": source}
        query.uncertainty_ = copy.deepcopy(state)
        unc = query.predict_protein(sub, return_uncertainty=True, level=level, batch_size=batch_size)
        mean = unc.mean.to_numpy(np.float64)
        half = (unc.upper.to_numpy(np.float64) - mean)[measured]
        ratio = np.abs(y[measured] - mean[measured]) / np.maximum(half, 1e-12)
        before = float(np.mean(ratio <= 1.0))
        multiplier = conformal_quantile(ratio, level)
        multiplier = 1.0 if not np.isfinite(multiplier) or multiplier <= 1.0 else float(multiplier)
        if multiplier > 1.0:
            query.uncertainty_["scores"] = (np.asarray(state["scores"], dtype=np.float64) * multiplier).astype(
                np.asarray(state["scores"]).dtype
            )
            logger.info(
                "%s: %.1f%% of %d held-out query values inside the %.0f%% intervals; widened all intervals by %.3f",
                _CALLER,
                100 * before,
                ratio.size,
                100 * level,
                multiplier,
            )
        return {
            "level": float(level),
            "n_cells": int(sub.n_obs),
            "n_values": int(ratio.size),
            "coverage_before": before,
            "multiplier": float(multiplier),
            "coverage_after": float(np.mean(ratio <= multiplier)),
            "source": source,
        }
