"""`--recipe paper`: the official training script's choices, checked against independent code."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from torch import nn
from train_sim import simulate, write_plain_labels, write_store

from apexmusic.cli import main
from apexmusic.data import given_split, join_labels, load_labels
from apexmusic.errors import ConfigError, DataError
from apexmusic.recipes import RECIPES, recipe_values
from apexmusic.store import EmbeddingStore
from apexmusic.tasks import ALL_TASKS
from apexmusic.train import MultiTaskLoss, TrainConfig, epoch_order, train
from apexmusic.train.loop import _batch_mean_loss
from apexmusic.train.tensors import _Tensors

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    songs, targets, creators, created = simulate(n=400, n_layers=1, dim=24, seed=3)
    store = write_store(root / "store", songs, 1, 24)
    plain = write_plain_labels(root / "plain.csv", [s.id for s in songs], targets, creators, created)
    rows = list(csv.DictReader(plain.open()))
    parts = np.random.default_rng(0).choice(["train", "val", "test"], size=len(rows), p=[0.7, 0.15, 0.15])
    with (root / "labels.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*rows[0], "split"])
        writer.writeheader()
        writer.writerows({**r, "split": p} for r, p in zip(rows, parts, strict=True))
    return root, store, root / "labels.csv", plain, parts


def test_epoch_order_is_the_official_distributed_sampler():
    from torch.utils.data import DistributedSampler

    n = 1000
    sampler = DistributedSampler(range(n), num_replicas=1, rank=0, shuffle=True)
    for epoch in (1, 2, 7):
        sampler.set_epoch(epoch)
        assert epoch_order(n, epoch, "sampler", torch.Generator()).tolist() == list(sampler)


def test_batch_mean_validation_loss_is_the_official_one():
    # The official validate(): DataLoader in order, per-batch nn.MSELoss per task, the
    # uncertainty combination 1/(2·exp(log σ)²)·L + log σ, summed, then averaged over batches.
    torch.manual_seed(0)
    from apexmusic.model import HeadConfig, build_net

    net = build_net(HeadConfig(dim=12, standardize=False))
    net.eval()
    x, y = torch.randn(1100, 12), torch.rand(1100, 7) * 4 + 1
    criterion = MultiTaskLoss("uncertainty", ALL_TASKS)
    with torch.no_grad():
        criterion.log_sigma.copy_(torch.linspace(-0.5, 0.5, 7))
    va = _Tensors(x=x, y=y, mask=torch.ones_like(y, dtype=torch.bool), song_y=y.numpy())
    ours = _batch_mean_loss(net, criterion, va, 512, torch.autocast("cpu", enabled=False))

    mse, losses = nn.MSELoss(), []
    with torch.no_grad():
        for s in range(0, 1100, 512):
            pred = net(x[s : s + 512, None, :])
            total = 0.0
            for i in range(7):
                log_sigma = criterion.log_sigma[i]
                total += 1 / (2 * torch.exp(log_sigma) ** 2) * mse(pred[:, i], y[s : s + 512, i]) + log_sigma
            losses.append(float(total))
    assert ours == pytest.approx(float(np.mean(losses)), rel=1e-5)
    assert len(losses) == 3  # the short last batch counts as much as a full one


def test_given_split_reads_the_labels_column(sim):
    _, store, labels, plain, parts = sim
    dataset = join_labels(EmbeddingStore(store).load(), load_labels(labels))
    split = given_split(dataset.labels)
    assert split.sizes() == {p: int((parts == p).sum()) for p in ("train", "val", "test")}
    assert np.all(parts[split.val] == "val")
    with pytest.raises(ConfigError, match="split"):
        given_split(join_labels(EmbeddingStore(store).load(), load_labels(plain)).labels)
    bad = join_labels(EmbeddingStore(store).load(), load_labels(labels)).labels
    bad.extra["split"][3] = "holdout"
    with pytest.raises(DataError, match="holdout"):
        given_split(bad)


def test_sigma_weight_decay_follows_the_recipe(sim):
    _, store, labels, _, _ = sim
    dataset = join_labels(EmbeddingStore(store).load(), load_labels(labels))
    split = given_split(dataset.labels)
    sigmas = {}
    for decay in (False, True):
        # A strong decay (each step keeps a tenth of every decayed value) makes the difference
        # plain: decayed log σ stay near 0 (σ near 1), spared ones follow the loss.
        config = TrainConfig(
            epochs=8, batch_size=64, lr=1e-2, weight_decay=90.0, n_boot=0, decay_sigmas=decay
        )
        sigmas[decay] = np.abs(np.log(train(dataset, config, split=split).model.training["sigmas"]))
    assert np.all(sigmas[True] < sigmas[False]) and sigmas[True].max() < 0.02 < sigmas[False].mean(), sigmas


def test_fp16_with_loss_scaling_trains(sim):
    _, store, labels, _, _ = sim
    dataset = join_labels(EmbeddingStore(store).load(), load_labels(labels))
    config = TrainConfig(**recipe_values("paper", epochs=25, batch_size=64, lr=1e-2, n_boot=0, device="cpu"))
    result = train(dataset, config)
    assert result.model.training["precision"] == "fp16"
    assert result.split.sizes() == given_split(dataset.labels).sizes()
    rho = [m["spearman"] for m in result.evaluation.metrics.values()]
    assert np.mean(rho) > 0.4, rho


def test_cli_recipe_paper(sim, tmp_path):
    _, store, labels, plain, parts = sim
    args = ["train", "--embeddings", str(store), "--out", str(tmp_path / "m"), "--recipe", "paper"]
    args += ["--epochs", "2", "--n-boot", "0", "--device", "cpu"]
    assert main([*args, "--labels", str(labels)]) == 0
    training = json.loads((tmp_path / "m" / "config.json").read_text())["training"]
    for key, value in RECIPES["paper"].values.items():
        if key != "epochs":
            assert training[key] == value, key
    assert training["recipe"] == "paper" and training["epochs"] == 2  # a flag overrides the recipe
    assert training["split_sizes"]["test"] == int((parts == "test").sum())
    # Without the published split the recipe says what is missing, in one line.
    assert main([*args, "--labels", str(plain)]) == 2


def test_default_recipe_is_ours():
    assert RECIPES["ours"].values == {}
    config = TrainConfig(**recipe_values("ours"))
    assert (config.mixing, config.standardize, config.decay_sigmas) == ("learned", True, False)
    with pytest.raises(ConfigError):
        recipe_values("nope")
