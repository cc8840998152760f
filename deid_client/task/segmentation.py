"""The local segmentation model: a segmentation-models-pytorch U-Net, Dice + BCE.

Arrays in, numbers out: images are uint8 N x H x W x 3, masks bool N x H x W.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import segmentation_models_pytorch as smp
import torch
from torch import nn

from deid_client.metrics import dice, iou

__all__ = ["UNetConfig", "TrainConfig", "build_unet", "unet_for", "DiceBCELoss", "train_epochs",
           "augment_batch", "score", "to_tensors", "round_lr"]


NORMS = ("batch", "group")


@dataclass(frozen=True)
class UNetConfig:
    """The federation's U-Net (run-config keys ``encoder``, ``encoder-depth``); ``norm`` is
    ``group`` when differential privacy is on (``deid_client.task.dp.DpConfig.norm``)."""

    encoder: str
    depth: int
    norm: str = "batch"


@dataclass(frozen=True)
class TrainConfig:
    """A site's local training each round (run-config keys ``lr``: round 1's learning
    rate, :func:`round_lr` decays it; ``local-epochs``; ``batch-size``)."""

    lr: float
    local_epochs: int
    batch_size: int


def build_unet(encoder: str = "resnet18", depth: int = 3, *, seed: int = 0, norm: str = "batch"
               ) -> nn.Module:
    """U-Net with a randomly initialised encoder (no hub: ``encoder_weights=None``).

    ``depth`` 3..5 encoder stages; 3 (decoder 64-32-16) trains fast on a CPU.
    ``norm="group"``: every BatchNorm becomes a GroupNorm (opacus's ``ModuleValidator.fix``),
    as differential privacy needs: BatchNorm's running statistics are averages over a
    site's photos that leave outside any clipped update (docs/update_leakage.md).

    >>> model = build_unet("resnet18", 3)
    >>> model(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 1, 64, 64])
    """
    torch.manual_seed(seed)
    decoder = tuple(16 * 2**i for i in reversed(range(depth)))
    model = smp.Unet(encoder_name=encoder, encoder_weights=None, encoder_depth=depth,
                     decoder_channels=decoder, in_channels=3, classes=1)
    # A ResNet encoder keeps stages beyond `depth` that its forward never runs;
    # drop them so they are not trained, stored or sent every round (10M of 11M weights).
    for stage in range(depth, 5):
        if hasattr(model.encoder, f"layer{stage}"):
            delattr(model.encoder, f"layer{stage}")
    if norm == "group":
        from opacus.validators import ModuleValidator

        model = ModuleValidator.fix(model)
    elif norm != "batch":
        raise ValueError(f"norm must be one of {NORMS}, not {norm!r}")
    return model


def unet_for(unet: UNetConfig, *, seed: int = 0) -> nn.Module:
    """The federation's U-Net, randomly initialised from ``seed``.

    >>> type(unet_for(UNetConfig("resnet18", 3, norm="group")).encoder.bn1).__name__
    'GroupNorm'
    """
    return build_unet(unet.encoder, unet.depth, seed=seed, norm=unet.norm)


class DiceBCELoss(nn.Module):
    """Dice loss plus binary cross-entropy, both on logits. ``pos_weight`` weighs the
    lesion pixels' cross-entropy: lesions cover about 2% of a phantom photo, and
    unweighted the first rounds learn to predict no lesion at all (docs/training.md)."""

    def __init__(self, pos_weight: float = 1.0):
        super().__init__()
        self.dice = smp.losses.DiceLoss(mode="binary", from_logits=True)
        self.bce = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(float(pos_weight)))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.dice(logits, target) + self.bce(logits, target)


def round_lr(lr: float, server_round: int, num_rounds: int) -> float:
    """The learning rate of federated round ``server_round`` (1-based) of ``num_rounds``:
    cosine decay from ``lr``, so that late rounds refine instead of jumping about.

    >>> [round(round_lr(1.0, r, 5), 3) for r in range(1, 6)]
    [1.0, 0.905, 0.655, 0.345, 0.095]
    """
    return lr * 0.5 * (1 + math.cos(math.pi * (server_round - 1) / max(num_rounds, 1)))


def to_tensors(images: np.ndarray, masks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 N x H x W x 3 and bool N x H x W -> float N x 3 x H x W in 0..1, N x 1 x H x W."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255)
    y = torch.from_numpy(np.ascontiguousarray(masks)).unsqueeze(1).float()
    return x, y


def train_epochs(
    model: nn.Module,
    images: np.ndarray,
    masks: np.ndarray,
    *,
    epochs: int = 1,
    batch_size: int = 8,
    lr: float = 1e-3,
    device: str = "cpu",
    seed: int = 0,
    proximal_mu: float = 0.0,
    augment: bool = True,
    pos_weight: float = 10.0,
) -> float:
    """Train in place with Adam; returns the mean training loss of the last epoch.

    ``proximal_mu > 0`` adds FedProx's ``mu/2 ||w - w_global||^2`` (w_global: the
    weights the model had on entry).
    """
    x, y = to_tensors(images, masks)
    model.to(device).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = DiceBCELoss(pos_weight)
    generator = torch.Generator().manual_seed(seed)
    anchor = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else []
    last = float("nan")
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        total, count = 0.0, 0
        for start in range(0, len(x), batch_size):
            batch = order[start : start + batch_size]
            optimiser.zero_grad()
            xb, yb = x[batch], y[batch]
            if augment:
                xb, yb = augment_batch(xb, yb, generator)
            loss = loss_fn(model(xb.to(device)), yb.to(device))
            if anchor:
                loss = loss + proximal_mu / 2 * sum(
                    (p - a).pow(2).sum() for p, a in zip(model.parameters(), anchor))
            loss.backward()
            optimiser.step()
            total += loss.item() * len(batch)
            count += len(batch)
        last = total / max(count, 1)
    return last


def augment_batch(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator):
    """Mirror, flip and a mild brightness/contrast change per image, drawn from
    ``generator`` (a site has a few dozen photos: without it the U-Net learns them by heart)."""
    n = len(x)
    x, y = x.clone(), y.clone()
    for dim in (-1, -2):
        flip = torch.rand(n, generator=generator) < 0.5
        x[flip], y[flip] = x[flip].flip(dim), y[flip].flip(dim)
    gain = 1 + 0.2 * (torch.rand(n, 1, 1, 1, generator=generator) - 0.5)
    shift = 0.1 * (torch.rand(n, 1, 1, 1, generator=generator) - 0.5)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * gain + mean + shift).clamp_(0, 1), y


@torch.no_grad()
def score(
    model: nn.Module,
    images: np.ndarray,
    masks: np.ndarray,
    *,
    batch_size: int = 16,
    device: str = "cpu",
) -> dict[str, float]:
    """Loss, and per-image-averaged Dice and IoU of ``logits > 0`` against ``masks``."""
    x, y = to_tensors(images, masks)
    model.to(device).eval()
    loss_fn = DiceBCELoss()
    total, dices, ious = 0.0, [], []
    for start in range(0, len(x), batch_size):
        logits = model(x[start : start + batch_size].to(device))
        total += loss_fn(logits, y[start : start + batch_size].to(device)).item() * len(logits)
        for pred, truth in zip((logits[:, 0] > 0).cpu().numpy(), masks[start : start + batch_size]):
            dices.append(dice(pred, truth))
            ious.append(iou(pred, truth))
    return {"loss": total / len(x), "dice": float(np.mean(dices)), "iou": float(np.mean(ious))}
