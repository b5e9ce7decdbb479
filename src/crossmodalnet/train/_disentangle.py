"""Disentangling phase: train the encoder alone against the discriminators, the decoder frozen."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from crossmodalnet._constants import REGISTRY_KEYS
from crossmodalnet._disentangle_settings import (
    DEFAULT_STATE_FIT,
    check_clustering,
    check_conditioning,
    check_max_steps,
    check_state_term,
    resolve_n_clusters,
)
from crossmodalnet.nn import confusion_loss, covariate_mmd, discriminator_loss, group_lasso, masked_mse, nlc_loss

if TYPE_CHECKING:
    from collections.abc import Iterable

    from crossmodalnet.module import CrossmodalModule


def disentangle_encoder(
    module: CrossmodalModule,
    batches: Iterable[dict[str, torch.Tensor]],
    *,
    epochs: int,
    objective: str = "mmd",
    weight: float = 1.0,
    discriminator_steps: int = 3,
    lr: float = 1e-3,
    weight_decay: float = 5e-6,
    lr_discriminator: float = 0.0087,
    weight_decay_discriminator: float = 5e-5,
    gradient_penalty: float = 0.4,
    input_group_lasso: float = 0.0,
    n_clusters: int | None = None,
    min_cells: int = 3,
    clustering: str = "kmeans",
    state_weight: float = 0.0,
    state_components: int = 10,
    state_fit: str = DEFAULT_STATE_FIT,
    max_steps: int | None = None,
    record: dict | None = None,
) -> list[float]:
    r"""Train the encoder (MLP1) alone so the covariates can no longer be read from the basal latent.

    Everything else that makes a prediction (MLP2, the covariate embeddings, the linear path) stays
    frozen, MLP2 in evaluation mode. On every mini-batch the encoder takes one Adam step on

    .. math:: \mathrm{NLC} + \mathrm{MSE} + w \cdot R(z) \; [+ \, w_s \cdot S(z)]

    with the predictions decoded by the frozen MLP2, so the encoder keeps what the decoder reads
    while removing the covariates. ``objective`` chooses :math:`R`:

    - ``"mmd"`` (default): :func:`~crossmodalnet.train.covariate_mmd` of each adversarial covariate; no
      discriminator is involved. With ``n_clusters``, the discrepancy is conditional on cell-state
      clusters, so that a covariate that changes the cell-state proportions (legitimately visible) is
      not mixed away with the cell states: only differences within a cluster are removed.
    - ``"confusion"``: :func:`~crossmodalnet.train.confusion_loss` of the discriminators, which first
      take ``discriminator_steps`` steps on the mini-batch (:func:`~crossmodalnet.train.discriminator_loss`).

    Parameters
    ----------
    module
        A trained ``CrossmodalModule`` (``model.module``) with at least one adversarial
        covariate; changed in place.
    batches
        Re-iterable source of training mini-batches (registry tensors), e.g. a data loader.
    epochs
        Passes over ``batches``.
    objective
        ``"mmd"`` or ``"confusion"`` (see above).
    weight
        Weight :math:`w` of the disentangling term.
    discriminator_steps
        With ``"confusion"``: discriminator updates per mini-batch, before each encoder update.
    lr, weight_decay
        Adam settings of the encoder.
    lr_discriminator, weight_decay_discriminator, gradient_penalty
        With ``"confusion"``: Adam settings and gradient penalty of the discriminators.
    input_group_lasso
        Weight of the group-lasso penalty on MLP1's first layer (:func:`~crossmodalnet.train.group_lasso`),
        as in training, added to the loss.
    n_clusters
        With ``"mmd"``: an integer >= 2 makes the matching conditional on that many cell-state
        clusters (``groups`` of :func:`~crossmodalnet.train.covariate_mmd`); 0 matches each
        category's whole latent distribution to the rest (unconditional). ``None`` (default): 10
        clusters (at most one per training cell) with ``"mmd"``, 0 with ``"confusion"``. The
        clusters are computed once, before the first step, on the training cells' input (the first
        mini-batches of one pass over ``batches``, up to 5,000 cells, fewer beyond 8,000 genes so the
        sample stays under about 320 MB: 2,000 cells at 20,000 genes): k-means (``random_state=0``)
        on the first 50 principal components after removing each covariate category's mean, so
        that the clusters are cell states seen at every category, not the categories themselves.
        Every mini-batch cell is assigned to its nearest cluster centre the same way.
    min_cells
        With ``n_clusters``: the fewest cells of a category, and of the other categories, within a
        cluster of a mini-batch for that comparison to count (at least 2).
    clustering
        With ``n_clusters``: how the cell-state clusters are found. ``"kmeans"`` (default): as above.
        ``"harmony"``: k-means on the principal components corrected by Harmony
        (``harmonypy.run_harmony``, the adversarial covariates as its batch variables,
        ``random_state=0``), so that a state stays one cluster across categories even where the
        covariate changes it differently from state to state (a within-state effect that the mean
        removal leaves, and that k-means then splits along the covariate). A mini-batch cell is assigned
        to the nearest centre of the clusters' cells of its own category (its cluster's centre shifted
        by the category's mean shift where a cluster has fewer than 3 cells of that category).
    state_weight
        Weight :math:`w_s` of the cell-state geometry term :math:`S` (0, this function's default, leaves it
        out; the ``"default"`` training preset of :class:`~crossmodalnet.model.CrossmodalNet` uses 10; needs
        the conditional MMD). :math:`S` compares the mini-batch's pairwise cell distances in the basal latent
        with those in a target of what the cell state is (``state_fit``): the
        input's first ``state_components`` principal components and, with a linear path, its output
        ``x W`` (each block scaled to a total variance of 1 on the training cells), with each covariate
        category's mean shift within each cell-state cluster removed. So the latent keeps the input's
        cell-state geometry, including how the state proportions change with the covariate, but not the
        covariate's effect within a state.
    state_components
        Principal components of the input in the target of :math:`S`.
    state_fit
        How :math:`S` compares the distances. ``"ratio"`` (default): one minus their cosine, so the latent's
        distances must be proportional to the target's; a constant distance added between all cells (which
        lowers every cell type's silhouette) is penalised. ``"interval"``: one minus their Pearson correlation,
        which allows that constant (the term's first form).
    max_steps
        At most this many encoder steps (mini-batches) in all, ending within an epoch if need be; ``None``:
        ``epochs`` whole epochs. Epochs scale the steps with the cells (25 epochs are 100 steps on 1,000
        cells and 3,900 on 50,000), so a cap keeps the phase's length on a large reference to what was
        measured on smaller ones.
    record
        If given, a dictionary that receives ``"state_term"``: the mean of :math:`S` over the mini-batches
        of each epoch (empty without the term), and ``"steps"``: the encoder steps taken.

    Returns
    -------
    list[float]
        Mean of the disentangling term :math:`R(z)` over the mini-batches of each epoch.
    """
    if objective not in ("mmd", "confusion"):
        raise ValueError(f"`objective` must be 'mmd' or 'confusion', got {objective!r}.")
    if epochs < 0 or int(epochs) != epochs:
        raise ValueError(f"`epochs` must be an integer >= 0, got {epochs!r}.")
    check_max_steps(max_steps)
    if discriminator_steps < 1 or int(discriminator_steps) != discriminator_steps:
        raise ValueError(f"`discriminator_steps` must be an integer >= 1, got {discriminator_steps!r}.")
    check_conditioning(objective, n_clusters, min_cells)
    cap = n_clusters is None
    n_clusters = resolve_n_clusters(objective, n_clusters)
    check_clustering(clustering, n_clusters)
    check_state_term(objective, n_clusters, state_weight, state_components, state_fit)
    state_history = [] if record is None else record.setdefault("state_term", [])
    adv = module.adversarial_covariates
    if not adv or epochs == 0:
        return []
    sample = _training_sample(module, batches) if n_clusters else None
    clusters = _StateClusters(module, sample, n_clusters, cap=cap, clustering=clustering) if n_clusters else None
    state = _StateGeometry(module, sample, clusters, state_components, fit=state_fit) if state_weight > 0 else None
    frozen = [*module.decoder.parameters(), *module.covariate_embeddings.parameters()]
    requires = [p.requires_grad for p in frozen]
    for p in frozen:
        p.requires_grad_(requires_grad=False)
    device = next(module.parameters()).device
    opt_enc = torch.optim.Adam(module.encoder.parameters(), lr=lr, weight_decay=weight_decay)
    opt_dis = torch.optim.Adam(
        module.discriminators.parameters(), lr=lr_discriminator, weight_decay=weight_decay_discriminator
    )
    history: list[float] = []
    was_training = module.training
    try:
        module.train()
        module.decoder.eval()
        steps = 0
        for _ in range(int(epochs)):
            if max_steps is not None and steps >= max_steps:
                break
            total, state_total, n_batches = 0.0, 0.0, 0
            for batch in batches:
                if max_steps is not None and steps >= max_steps:
                    break
                steps += 1
                batch = {k: v.to(device) for k, v in batch.items()}
                codes = module.covariate_codes(batch)
                x = batch[REGISTRY_KEYS.X_KEY]
                if objective == "confusion":
                    for _ in range(int(discriminator_steps)):
                        with torch.no_grad():
                            z = module.inference(x)["z"]
                        z = z.detach().requires_grad_(gradient_penalty > 0)
                        logits = [module.discriminators[i](z) for i in adv]
                        loss, _ = discriminator_loss(
                            logits, [codes[i] for i in adv], z, gradient_penalty=gradient_penalty
                        )
                        opt_dis.zero_grad(set_to_none=True)
                        loss.backward()
                        opt_dis.step()
                z = module.inference(x)["z"]
                pred = module.generative(**module._get_generative_input(batch, {"z": z}))["protein_scaled"]
                target = module.scale_protein(module.protein_from_tensors(batch))
                groups = None if clusters is None else clusters.assign(x, codes)
                if objective == "mmd":
                    term = sum(covariate_mmd(z, codes[i], groups=groups, min_cells=min_cells) for i in adv)
                else:
                    term = confusion_loss([module.discriminators[i](z) for i in adv])
                loss = nlc_loss(pred, target) + masked_mse(pred, target) + weight * term
                if state is not None:
                    state_term = state.loss(z, x, codes, groups)
                    loss = loss + state_weight * state_term
                    state_total += float(state_term.detach())
                if input_group_lasso > 0:
                    loss = loss + input_group_lasso * group_lasso(module.encoder.first_layer.weight)
                opt_enc.zero_grad(set_to_none=True)
                opt_dis.zero_grad(set_to_none=True)
                loss.backward()
                opt_enc.step()
                total += float(term.detach())
                n_batches += 1
            history.append(total / max(n_batches, 1))
            if state is not None:
                state_history.append(state_total / max(n_batches, 1))
        if record is not None:
            record["steps"] = steps
    finally:
        for p, r in zip(frozen, requires, strict=True):
            p.requires_grad_(r)
        module.train(was_training)
        opt_dis.zero_grad(set_to_none=True)
    return history


MAX_CLUSTER_CELLS = 5000
"""The cell-state clusters are fitted on at most about this many training cells."""

MAX_CLUSTER_BYTES = 320 * 2**20
"""... and on at most about this many bytes of dense float64 input (1,000 cells at least): 5,000 cells up to 8,000
genes, 2,000 cells at 20,000 genes. The sample and the principal-component fits' centred copies of it are the
phase's largest arrays, so this bounds its memory when there are many genes."""


def _sample_cells(n_genes: int) -> int:
    """Cells of the clustering sample for ``n_genes`` input genes (:data:`MAX_CLUSTER_CELLS`, :data:`MAX_CLUSTER_BYTES`)."""
    return min(MAX_CLUSTER_CELLS, max(1000, MAX_CLUSTER_BYTES // (8 * max(int(n_genes), 1))))


def _dense(x: torch.Tensor) -> np.ndarray:
    return (x.to_dense() if x.layout != torch.strided else x).detach().cpu().numpy().astype(np.float64)


def _training_sample(
    module: CrossmodalModule, batches: Iterable[dict[str, torch.Tensor]]
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Input and adversarial-covariate codes of the first mini-batches, up to about :func:`_sample_cells` cells.

    The mini-batches are kept as they come (sparse or float32) and copied once into the float64 sample.
    """
    xs, code_lists, n_cells = [], [], 0
    for batch in batches:
        x = batch[REGISTRY_KEYS.X_KEY].detach().cpu()
        xs.append(x)
        codes = module.covariate_codes(batch)
        code_lists.append({i: codes[i].detach().cpu().numpy() for i in module.adversarial_covariates})
        n_cells += x.shape[0]
        if n_cells >= _sample_cells(x.shape[1]):  # a shuffled loader: its first mini-batches are a random sample
            break
    codes = {i: np.concatenate([c[i] for c in code_lists]) for i in module.adversarial_covariates}
    sample = np.empty((n_cells, xs[0].shape[1]), dtype=np.float64)
    start = 0
    for x in xs:
        sample[start : start + x.shape[0]] = (x.to_dense() if x.layout != torch.strided else x).numpy()
        start += x.shape[0]
    return sample, codes


class _StateClusters:
    """Cell-state clusters of a training-cell sample (:func:`_training_sample`), the covariate categories' means removed.

    With ``clustering="harmony"`` the clusters come from k-means on Harmony-corrected principal components, and a
    cell is assigned to the nearest centre of its own category's cells in each cluster.
    """

    def __init__(
        self,
        module: CrossmodalModule,
        sample: tuple[np.ndarray, dict[int, np.ndarray]],
        n_clusters: int,
        *,
        cap: bool = False,
        clustering: str = "kmeans",
    ):
        from sklearn.cluster import KMeans
        from sklearn.decomposition import PCA

        x, all_codes = sample
        if cap:
            n_clusters = min(n_clusters, x.shape[0])
        if x.shape[0] < n_clusters:
            raise ValueError(
                f"`n_clusters={n_clusters}` is more than the {x.shape[0]} training cells; choose fewer clusters."
            )
        self.module = module
        self.pca = PCA(n_components=min(50, x.shape[0] - 1, x.shape[1]), random_state=0).fit(x)
        pcs = self.pca.transform(x)
        self.centroids = None
        self.offsets = {}
        if clustering == "harmony":
            self.kmeans = KMeans(n_clusters=n_clusters, n_init=10, random_state=0).fit(_harmony(pcs, all_codes))
            self.centroids = self._category_centroids(pcs, self._joint_codes(all_codes), self.kmeans.labels_)
            return
        for i, codes in all_codes.items():
            offset = np.zeros((int(codes.max()) + 1, pcs.shape[1]))
            for c in np.unique(codes):
                offset[c] = pcs[codes == c].mean(0)
            self.offsets[i] = offset
            pcs = pcs - offset[codes]
        self.kmeans = KMeans(n_clusters=n_clusters, n_init=10, random_state=0).fit(pcs)

    def _joint_codes(self, codes: dict[int, np.ndarray]) -> np.ndarray:
        """One code per combination of the adversarial covariates' categories."""
        dims = [int(self.module.n_cats_per_cov[i]) for i in codes]
        clipped = [np.minimum(np.asarray(c), d - 1) for c, d in zip(codes.values(), dims, strict=True)]
        return np.ravel_multi_index(clipped, dims)

    def _category_centroids(self, pcs: np.ndarray, joint: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Centre of each cluster's cells of each category combination (clusters × combinations × components)."""
        n_joint = int(np.prod([int(self.module.n_cats_per_cov[i]) for i in self.module.adversarial_covariates]))
        shift = np.zeros((n_joint, pcs.shape[1]))
        for c in np.unique(joint):
            shift[c] = pcs[joint == c].mean(0) - pcs.mean(0)
        centroids = np.empty((self.kmeans.n_clusters, n_joint, pcs.shape[1]))
        for k in range(self.kmeans.n_clusters):
            in_k = labels == k
            for c in range(n_joint):
                cells = in_k & (joint == c)
                # too few cells of a category in a cluster: the cluster's centre, shifted by the category's mean shift
                centroids[k, c] = pcs[cells].mean(0) if cells.sum() >= 3 else pcs[in_k].mean(0) + shift[c]
        return centroids

    def assign(self, x: torch.Tensor, codes: dict[int, torch.Tensor]) -> torch.Tensor:
        """Cluster of each cell of a mini-batch."""
        pcs = self.pca.transform(_dense(x))
        if self.centroids is not None:
            joint = self._joint_codes({i: codes[i].detach().cpu().numpy() for i in self.module.adversarial_covariates})
            centres = self.centroids[:, joint, :].transpose(1, 0, 2)  # cells × clusters × components
            nearest = ((pcs[:, None, :] - centres) ** 2).sum(-1).argmin(1)
            return torch.as_tensor(nearest, dtype=torch.long, device=x.device)
        for i, offset in self.offsets.items():
            c = codes[i].detach().cpu().numpy()
            # a category the training cells lack keeps its position
            pcs = pcs - np.where((c < len(offset))[:, None], offset[np.minimum(c, len(offset) - 1)], 0.0)
        return torch.as_tensor(self.kmeans.predict(pcs), dtype=torch.long, device=x.device)


def _harmony(pcs: np.ndarray, codes: dict[int, np.ndarray]) -> np.ndarray:
    """Principal components corrected by Harmony for the adversarial covariates (their codes as batch variables)."""
    import harmonypy
    import pandas as pd

    meta = pd.DataFrame({f"covariate_{i}": np.asarray(c).astype(str) for i, c in codes.items()})
    harmony = harmonypy.run_harmony(pcs, meta, list(meta.columns), verbose=False, random_state=0)
    return np.asarray(harmony.Z_corr)


class _StateGeometry:
    """Target geometry of the cell-state term: input principal components and linear-path output, state-conditioned.

    Both blocks are scaled to a total variance of 1 on the training cells. For each adversarial covariate,
    the shift ``mean(cluster, category) - mean(cluster)`` of each category within each cell-state cluster is
    removed, so the target keeps the states and their proportions at every category but not the covariate's
    effect within a state.
    """

    def __init__(
        self,
        module: CrossmodalModule,
        sample: tuple[np.ndarray, dict[int, np.ndarray]],
        clusters: _StateClusters,
        n_components: int,
        *,
        fit: str = DEFAULT_STATE_FIT,
    ):
        from sklearn.decomposition import PCA

        x, codes = sample
        self.module = module
        self.fit = fit
        device = next(module.parameters()).device
        self.pca = PCA(n_components=min(n_components, x.shape[0] - 1, x.shape[1]), random_state=0).fit(x)
        x_t = torch.as_tensor(x, dtype=torch.float32, device=device)
        self.scales = [float(b.var(0).sum().sqrt()) or 1.0 for b in self._blocks(x_t)]
        target = self._scaled(x_t).cpu().numpy()
        groups = clusters.assign(x_t, {i: torch.as_tensor(c) for i, c in codes.items()}).cpu().numpy()
        self.offsets = {}
        for i, c in codes.items():
            offset = np.zeros((clusters.kmeans.n_clusters, int(module.n_cats_per_cov[i]), target.shape[1]))
            for g in np.unique(groups):
                in_g = groups == g
                for k in np.unique(c[in_g]):
                    offset[g, k] = target[in_g & (c == k)].mean(0) - target[in_g].mean(0)
            self.offsets[i] = torch.as_tensor(offset, dtype=torch.float32, device=device)
            target = target - offset[groups, c]

    def _blocks(self, x: torch.Tensor) -> list[torch.Tensor]:
        dense = (x.to_dense() if x.layout != torch.strided else x).float()
        mean = torch.as_tensor(self.pca.mean_, dtype=dense.dtype, device=dense.device)
        components = torch.as_tensor(self.pca.components_, dtype=dense.dtype, device=dense.device)
        blocks = [(dense - mean) @ components.T]
        if self.module.linear_path:
            blocks.append(self.module.linear_product(dense))
        return blocks

    def _scaled(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b / s for b, s in zip(self._blocks(x), self.scales, strict=True)], dim=1)

    def loss(
        self, z: torch.Tensor, x: torch.Tensor, codes: dict[int, torch.Tensor], groups: torch.Tensor
    ) -> torch.Tensor:
        """:func:`_distance_mismatch` of the pairwise cell distances in ``z`` and in the target."""
        if z.shape[0] < 3:  # fewer than 3 pairs: no correlation
            return z.sum() * 0.0
        with torch.no_grad():
            target = self._scaled(x)
            for i, offset in self.offsets.items():
                target = target - offset[groups, codes[i]]
            d_target = _pair_distances(target)
        return _distance_mismatch(_pair_distances(z), d_target, fit=self.fit)


def _distance_mismatch(d_z: torch.Tensor, d_target: torch.Tensor, *, fit: str = DEFAULT_STATE_FIT) -> torch.Tensor:
    """One minus the agreement of two sets of pairwise distances: 0 when ``d_z`` is ``d_target`` up to what ``fit`` allows.

    ``"ratio"``: one minus their cosine, 0 only when ``d_z = a * d_target`` (a > 0), so an added constant distance
    between all cells, which lowers the silhouette of every cluster, is penalised. ``"interval"``: one minus their
    Pearson correlation, 0 also for ``d_z = a * d_target + b``.
    """
    if fit == "interval":
        d_target = d_target - d_target.mean()
        d_z = d_z - d_z.mean()
    return 1 - (d_z * d_target).sum() / (d_z.norm() * d_target.norm() + 1e-12)


def _pair_distances(x: torch.Tensor) -> torch.Tensor:
    """Euclidean distances of all cell pairs (``i < j``, the order of :func:`torch.pdist`), from the Gram matrix.

    Several times faster than :func:`torch.pdist` on CPU with its gradient; distances below 1e-6 are clamped
    there, so the gradient stays finite for identical cells.
    """
    sq = (x * x).sum(1)
    gram = sq[:, None] + sq[None, :] - 2 * (x @ x.T)
    rows, cols = torch.triu_indices(x.shape[0], x.shape[0], offset=1, device=x.device)
    return gram[rows, cols].clamp_min(1e-12).sqrt()
