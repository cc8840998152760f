"""Update inversion: what an honest-but-curious server can rebuild of a site's training
photos from the weights the site returns (docs/update_leakage.md).

The server knows the architecture, the weights it sent, the weights that came back
(parameters *and* BatchNorm running statistics), ``num-examples``, and the local
training settings of the run config (epochs, batch size, the round's learning rate, and
the seed, which is the server round). The attack, after Geiping et al. 2020 ("Inverting
Gradients") with the multi-step replay of Dimitrov et al. 2022 ("Data Leakage in
Federated Averaging"):

* candidate photos (and, when unknown, soft masks) are optimised so that replaying the
  site's local training on them (:func:`replay`: the same shuffles and augmentation
  draws, the same loss, Adam step by step) gives the update that was observed;
* the match is the cosine distance over all layers' update, plus the distance between
  the replayed and the observed BatchNorm running statistics (each step moves them
  towards that batch's feature means and variances, so the returned buffers are
  leakage too), plus a total-variation prior;
* Adam on the pixels with step decay at 3/8, 5/8 and 7/8 of the iterations, pixels
  boxed to [0, 1], several restarts, the best match kept.

A one-step Adam update is ``-lr * g / (|g| + eps)``: nearly ``-lr * sign(g)``, whose
derivative vanishes. The replay therefore softens Adam's denominator (``soften``, a
fraction of each tensor's RMS gradient); the cosine only needs the direction. At the
budget a CPU affords this still ends in noise; the learned inverter
(``research.learned_inversion``) is what rebuilds photos.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import nn
from torch.func import functional_call

from deid_client.task.segmentation import DiceBCELoss, augment_batch, train_epochs

__all__ = ["LocalTraining", "Observed", "LocalDp", "site_update", "replay", "invert", "Inversion", "match",
           "image_scores"]


@dataclass(frozen=True)
class LocalTraining:
    """A site's local round as the server knows it (the run config, the round's lr from
    ``round_lr``, ``seed`` = the server round, ``n_images`` = the reply's num-examples)."""

    n_images: int
    epochs: int = 1
    batch_size: int = 4
    lr: float = 0.002
    seed: int = 1
    augment: bool = True
    pos_weight: float = 10.0

    @property
    def steps(self) -> int:
        return self.epochs * math.ceil(self.n_images / self.batch_size)


@dataclass
class Observed:
    """What the server holds after a round: the weights it sent and those returned."""

    sent: dict[str, torch.Tensor]
    returned: dict[str, torch.Tensor]


def site_update(model: nn.Module, images: np.ndarray, masks: np.ndarray, training: LocalTraining
                ) -> Observed:
    """The site's real round: the product's ``train_epochs`` on a copy of ``model``."""
    sent = {k: v.detach().clone() for k, v in model.state_dict().items()}
    local = copy.deepcopy(model)
    train_epochs(local, images, masks, epochs=training.epochs, batch_size=training.batch_size,
                 lr=training.lr, seed=training.seed, augment=training.augment,
                 pos_weight=training.pos_weight)
    return Observed(sent, {k: v.detach().clone() for k, v in local.state_dict().items()})


@dataclass(frozen=True)
class LocalDp:
    """The site's ``LocalDpMod``: Flower's own clipping of the update to ``clip`` and
    Gaussian noise of ``noise`` x ``clip``, applied to an :class:`Observed` update."""

    clip: float
    noise: float

    def __call__(self, observed: Observed, rng: np.random.Generator) -> Observed:
        from flwr.supercore.differential_privacy import add_gaussian_noise_inplace, compute_clip_model_update

        keys = list(observed.sent)
        returned = [observed.returned[k].numpy().copy() for k in keys]
        compute_clip_model_update(returned, [observed.sent[k].numpy() for k in keys], self.clip)
        np.random.seed(int(rng.integers(2**31)))  # Flower draws its noise from numpy's global state
        add_gaussian_noise_inplace(returned, self.noise * self.clip)
        return Observed(observed.sent, {k: torch.from_numpy(v) for k, v in zip(keys, returned, strict=True)})


def _bn_modules(model: nn.Module) -> list[tuple[str, nn.BatchNorm2d]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def replay(model: nn.Module, sent: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
           training: LocalTraining, *, soften: float = 0.0, create_graph: bool = True
           ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The site's local training replayed on candidate photos ``x`` (N x 3 x H x W, 0..1)
    and masks ``y`` (N x 1 x H x W, 0..1), differentiably: the parameters' update and the
    BatchNorm running statistics it ends with (both keyed as in the state dict).

    ``soften`` 0 is torch's Adam exactly; > 0 adds ``soften`` x each tensor's RMS
    gradient to Adam's denominator, so that the update depends smoothly on the photos.
    """
    names = [n for n, _ in model.named_parameters()]
    params = {n: sent[n].detach().clone() for n in names}
    buffers = {n: sent[n].detach().clone() for n, _ in model.named_buffers()}
    bns = _bn_modules(model)
    running = {}
    for name, _ in bns:
        running[f"{name}.running_mean"] = sent[f"{name}.running_mean"].clone()
        running[f"{name}.running_var"] = sent[f"{name}.running_var"].clone()
    inputs: list[tuple[str, nn.Module, torch.Tensor]] = []
    hooks = [bn.register_forward_pre_hook(lambda m, a, name=name: inputs.append((name, m, a[0])))
             for name, bn in bns]
    loss_fn = DiceBCELoss(training.pos_weight)
    generator = torch.Generator().manual_seed(training.seed)
    beta1, beta2, eps = 0.9, 0.999, 1e-8  # torch.optim.Adam's defaults, as train_epochs uses
    m = {n: torch.zeros_like(p) for n, p in params.items()}
    v = {n: torch.zeros_like(p) for n, p in params.items()}
    current = {n: p.requires_grad_(True) for n, p in params.items()}
    step = 0
    try:
        for _ in range(training.epochs):
            order = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x), training.batch_size):
                batch = order[start : start + training.batch_size]
                xb, yb = x[batch], y[batch]
                if training.augment:
                    xb, yb = augment_batch(xb, yb, generator)
                inputs.clear()
                logits = functional_call(model, {**current, **buffers}, (xb,))
                loss = loss_fn(logits, yb)
                grads = torch.autograd.grad(loss, list(current.values()), create_graph=create_graph,
                                            retain_graph=True)
                step += 1
                updated = {}
                for (n, p), g in zip(current.items(), grads):
                    m[n] = beta1 * m[n] + (1 - beta1) * g
                    v[n] = beta2 * v[n] + (1 - beta2) * g * g
                    vhat = v[n] / (1 - beta2**step)
                    denom = (vhat + 1e-30).sqrt() + eps
                    if soften > 0:
                        denom = denom + soften * vhat.mean().add(1e-30).sqrt()
                    updated[n] = p - training.lr * (m[n] / (1 - beta1**step)) / denom
                current = updated
                for name, bn, a in inputs:
                    _track(running, name, bn, a)
    finally:
        for hook in hooks:
            hook.remove()
    return {n: current[n] - sent[n] for n in names}, running


def _track(running: dict, name: str, bn: nn.Module, a: torch.Tensor) -> None:
    """BatchNorm's running-statistics update for one forward pass in training mode."""
    mean = a.mean(dim=(0, 2, 3))
    count = a.numel() / a.shape[1]
    var = a.var(dim=(0, 2, 3), unbiased=True) if count > 1 else a.var(dim=(0, 2, 3), unbiased=False)
    mom = bn.momentum
    running[f"{name}.running_mean"] = (1 - mom) * running[f"{name}.running_mean"] + mom * mean
    running[f"{name}.running_var"] = (1 - mom) * running[f"{name}.running_var"] + mom * var


def _tv(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


@dataclass
class Inversion:
    """Reconstructed photos (uint8 N x H x W x 3), masks (bool; the given ones when
    known), and the final match loss of the restart kept."""

    images: np.ndarray
    masks: np.ndarray
    loss: float


def invert(model: nn.Module, observed: Observed, training: LocalTraining, *, size: int = 64,
           masks: np.ndarray | None = None, iterations: int = 400, restarts: int = 2,
           lr: float = 0.1, tv: float = 0.02, bn: float = 1.0, soften: float = 0.1,
           seed: int = 0) -> Inversion:
    """Rebuild the ``training.n_images`` photos behind ``observed``.

    ``masks`` (bool N x H x W): known (the upper bound); ``None``: optimised jointly.
    """
    names = [n for n, _ in model.named_parameters()]
    target = torch.cat([(observed.returned[n] - observed.sent[n]).flatten() for n in names])
    bn_keys = [k for k in observed.returned if k.endswith(("running_mean", "running_var"))]
    bn_scale = {k: (observed.returned[k] - observed.sent[k]).norm().clamp_min(1e-8) for k in bn_keys}
    n = training.n_images
    best: Inversion | None = None
    for restart in range(restarts):
        gen = torch.Generator().manual_seed(seed * 1000 + restart)
        x = torch.rand(n, 3, size, size, generator=gen).mul_(0.2).add_(0.4).requires_grad_(True)
        variables = [x]
        if masks is None:
            z = torch.full((n, 1, size, size), -2.0).add_(0.1 * torch.randn(n, 1, size, size, generator=gen))
            z.requires_grad_(True)
            variables.append(z)
        else:
            y_known = torch.from_numpy(np.asarray(masks, bool)).unsqueeze(1).float()
        optimiser = torch.optim.Adam(variables, lr=lr)
        milestones = [int(iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]
        schedule = torch.optim.lr_scheduler.MultiStepLR(optimiser, milestones, gamma=0.1)
        for _ in range(iterations):
            optimiser.zero_grad()
            y = torch.sigmoid(variables[1]) if masks is None else y_known
            update, running = replay(model, observed.sent, x, y, training, soften=soften)
            flat = torch.cat([update[k].flatten() for k in names])
            loss = 1 - torch.nn.functional.cosine_similarity(flat, target, dim=0)
            if bn > 0:
                loss = loss + bn * sum(((running[k] - observed.returned[k]).norm() / bn_scale[k]) ** 2
                                       for k in bn_keys) / len(bn_keys)
            loss = loss + tv * _tv(x)
            loss.backward()
            optimiser.step()
            schedule.step()
            with torch.no_grad():
                x.clamp_(0, 1)
        final = float(loss.detach())
        if best is None or final < best.loss:
            images = (x.detach().permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
            got = (variables[1].detach()[:, 0] > 0).numpy() if masks is None else np.asarray(masks, bool)
            best = Inversion(images, got, final)
    return best


def image_scores(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """PSNR (dB) and SSIM of two uint8 RGB photos."""
    return (float(peak_signal_noise_ratio(a, b, data_range=255)),
            float(structural_similarity(a, b, channel_axis=-1, data_range=255)))


def match(recovered: np.ndarray, training: np.ndarray) -> np.ndarray:
    """For each reconstruction, the training photo it is matched to: the Hungarian
    assignment maximising the total SSIM (rows without a partner get -1)."""
    cost = np.array([[-image_scores(r, t)[1] for t in training] for r in recovered])
    rows, cols = linear_sum_assignment(cost)
    out = np.full(len(recovered), -1)
    out[rows] = cols
    return out
