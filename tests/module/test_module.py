"""CrossmodalModule: its loss is the objective's one home, with one term per task and covariate."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from crossmodalnet._constants import REGISTRY_KEYS
from crossmodalnet.module import CrossmodalModule
from crossmodalnet.nn import nlc_loss


def test_module_does_not_import_train():
    code = (
        "import sys; import crossmodalnet.module; "
        "bad = [m for m in sys.modules if m.startswith('crossmodalnet.train')]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state")
def test_loss_has_one_term_per_task_and_adversarial_covariate():
    torch.manual_seed(0)
    module = CrossmodalModule(10, 4, [3, 2], n_latent=6, dropout_rate=0.0, n_hidden_discriminator=8, lambda_dis=0.3)
    module.eval()
    gen = torch.Generator().manual_seed(1)
    n = 24
    time, batch = torch.arange(n) % 3, (torch.arange(n) // 12) % 2
    tensors = {
        REGISTRY_KEYS.X_KEY: torch.rand(n, 10, generator=gen),
        REGISTRY_KEYS.PROTEIN_KEY: torch.randn(n, 4, generator=gen).to_sparse_csr(),  # sparse batches are densified
        REGISTRY_KEYS.TIME_KEY: time.reshape(-1, 1).float(),
        REGISTRY_KEYS.BATCH_KEY: batch.reshape(-1, 1).float(),
    }
    inference, generative, out = module(tensors)
    z, pred = inference["z"], generative["protein_scaled"]
    target = tensors[REGISTRY_KEYS.PROTEIN_KEY].to_dense()
    ce_time = torch.nn.functional.cross_entropy(module.discriminators[0](z), time)
    ce_batch = torch.nn.functional.cross_entropy(module.discriminators[1](z), batch)
    mse = ((pred - target) ** 2).mean()
    terms = out.extra_metrics
    assert set(terms) == {"nlc", "fader", "mse", "discriminator_ce", "discriminator_ce_time", "discriminator_ce_batch"}
    torch.testing.assert_close(terms["discriminator_ce_time"], ce_time)
    torch.testing.assert_close(terms["discriminator_ce_batch"], ce_batch)
    torch.testing.assert_close(terms["discriminator_ce"], ce_time + ce_batch)
    torch.testing.assert_close(terms["mse"], mse)
    torch.testing.assert_close(terms["nlc"], nlc_loss(pred, target))
    torch.testing.assert_close(terms["fader"], mse - 0.3 * (ce_time + ce_batch))
    torch.testing.assert_close(out.loss, terms["nlc"] + terms["fader"])  # weights start at 1
    assert out.n_obs_minibatch == n
    # the terms are differentiable: the plan takes its per-task gradients from them
    assert all(t.requires_grad for t in terms.values())


def test_single_category_covariate_gets_no_discriminator_term():
    module = CrossmodalModule(10, 4, [2, 1], n_latent=6)
    module.eval()
    n = 8
    tensors = {
        REGISTRY_KEYS.X_KEY: torch.rand(n, 10),
        REGISTRY_KEYS.PROTEIN_KEY: torch.randn(n, 4),
        REGISTRY_KEYS.TIME_KEY: (torch.arange(n) % 2).reshape(-1, 1).float(),
        REGISTRY_KEYS.BATCH_KEY: torch.zeros(n, 1),
    }
    terms = module(tensors)[2].extra_metrics
    assert "discriminator_ce_batch" not in terms
    torch.testing.assert_close(terms["discriminator_ce"], terms["discriminator_ce_time"])
