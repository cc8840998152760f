"""The learned inverter (Wu et al. 2023, "Learning to Invert"): the server simulates the
site's round on photos of its own from the same domain, and trains a network from the
update to the photos (docs/update_leakage.md).

The server's photos are phantoms of people it draws and, for a share, the photos it holds
of the patients (its re-identification gallery); :class:`InvertedGalleryAttacker` then
names a reconstruction's patient among reconstructions of that gallery.
"""

from __future__ import annotations

import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from deid_client.phantom import Identity, new_session, render_phantom, sample_identity, sample_lesion
from research.reid import Attacker
from research.update_inversion import LocalTraining, Observed, site_update

__all__ = ["features", "Standardise", "Inverter", "Rounds", "server_phantoms", "ServerPhotos", "simulate",
           "train_inverter", "fit", "learned_invert", "InvertedGalleryAttacker"]


def features(observed: Observed, training: LocalTraining, *, max_size: int = 10_000) -> np.ndarray:
    """The update as a vector: every tensor of at most ``max_size`` values (the first
    convolution, the last decoder stages, the head, every BatchNorm), parameters in units
    of ``lr`` per step, running statistics in units of the momentum."""
    parts = []
    for key, before in observed.sent.items():
        if before.numel() > max_size or key.endswith("num_batches_tracked"):
            continue
        delta = (observed.returned[key] - before).float().flatten()
        scale = 0.1 if "running_" in key else training.lr * training.steps
        parts.append(delta / scale)
    return torch.cat(parts).numpy()


class Standardise(nn.Module):
    """Update features -> zero mean and unit variance each, with the statistics of the
    simulated rounds it was fitted to (:meth:`fit_`)."""

    def __init__(self, n_features: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))

    def fit_(self, f: torch.Tensor) -> Standardise:
        self.mean.copy_(f.mean(0))
        self.std.copy_(f.std(0).clamp_min(1e-6))  # a constant feature stays 0
        return self

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return (f - self.mean) / self.std


class Inverter(nn.Module):
    """Update features -> ``n`` photos (64 x 64) and their mask logits: standardised
    features (all of them: principal components alone lose identity, docs/update_leakage.md),
    an MLP to each photo at 32 x 32, upsampled and sharpened by two convolutions."""

    def __init__(self, n_features: int, n_images: int, *, hidden: int = 256):
        super().__init__()
        self.n_images = n_images
        self.standardise = Standardise(n_features)
        self.encode = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Dropout(0.2),
                                    nn.Linear(hidden, 2 * hidden), nn.ReLU(),
                                    nn.Linear(2 * hidden, n_images * 4 * 32 * 32))
        # channels-last: a CPU runs these few-channel convolutions twice as fast
        self.refine = nn.Sequential(nn.Conv2d(4, 24, 3, padding=1), nn.ReLU(), nn.Conv2d(24, 4, 3, padding=1)
                                    ).to(memory_format=torch.channels_last)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """N x n x 4 x 64 x 64: RGB in 0..1, then the mask's logit."""
        return self.head(self.standardise(f))

    def head(self, z: torch.Tensor) -> torch.Tensor:
        """The photos from standardised features."""
        coarse = self.encode(z).view(-1, 4, 32, 32)
        coarse = nn.functional.interpolate(coarse, scale_factor=2, mode="bilinear", align_corners=False)
        coarse = coarse.contiguous(memory_format=torch.channels_last)
        out = (coarse + self.refine(coarse)).reshape(len(z), self.n_images, 4, 64, 64)
        return torch.cat([torch.sigmoid(out[:, :, :3]), out[:, :, 3:]], dim=2)


def server_phantoms(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, list[Identity]]:
    """``n`` phantoms of people the server draws itself: photos, exact masks, and who they are."""
    drawn = [render_phantom(sample_identity(rng), sample_lesion(rng), 64) for _ in range(n)]
    return np.stack([p.image for p in drawn]), np.stack([p.mask for p in drawn]), [p.identity for p in drawn]


@dataclass(frozen=True)
class ServerPhotos:
    """The server's photos for simulated rounds: phantoms of its own drawing and, with
    probability ``share`` each, a new session (light, backdrop, clothes, a new lesion) of a
    person it ``knows``: the patients as its gallery shows them. The server has fitted the
    public generator to its gallery photos; in the phantom world that fit is exact, the
    :class:`~deid_client.phantom.Identity` itself (an upper bound on that step). So the
    inverters learn those faces in any session, not those photos."""

    knows: tuple[Identity, ...] = ()
    share: float = 0.0

    def __call__(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, list[Identity]]:
        images, masks, people = server_phantoms(rng, n)
        for i in range(n):
            if self.knows and rng.random() < self.share:
                person = new_session(self.knows[int(rng.integers(len(self.knows)))], rng)
                photo = render_phantom(person, sample_lesion(rng), images.shape[1])
                images[i], masks[i], people[i] = photo.image, photo.mask, photo.identity
        return images, masks, people


@dataclass
class Rounds:
    """Simulated rounds: the update features (count x features), the photos (count x n x
    64 x 64 x 3), their masks and, where the photos' source says, the people in them
    (count x n :class:`~deid_client.phantom.Identity`, else ``None``)."""

    features: np.ndarray
    images: np.ndarray
    masks: np.ndarray
    people: np.ndarray | None


def simulate(model: nn.Module, training: LocalTraining, photos, count: int, *, seed: int = 0,
             privatise=None, workers: int = 1) -> Rounds:
    """``count`` simulated rounds of the site's training from ``model``, each on
    ``photos(rng, n)`` -> (uint8 n x 64 x 64 x 3, bool n x 64 x 64[, the n people]);
    ``privatise(observed, rng)`` applies the site's differential privacy, if any.

    Round ``i`` draws from its own generator, so the rounds are the same for any number of
    ``workers``: processes of one torch thread each (a 64-pixel round gains nothing from a
    second thread, a second process doubles the rate); ``photos`` and ``privatise`` must
    then be picklable."""
    if workers <= 1 or count < 2 * workers:
        parts = [_rounds(model, training, photos, range(count), seed, privatise)]
    else:
        chunks = [range(c[0], c[-1] + 1) for c in np.array_split(np.arange(count), workers)]
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=torch.set_num_threads, initargs=(1,)) as pool:
            parts = list(pool.map(_rounds, *zip(*[(model, training, photos, c, seed, privatise)
                                                   for c in chunks])))
    people = [who for part in parts for who in part[3]]
    known = None
    if people:
        known = np.empty((count, training.n_images), dtype=object)
        for i, row in enumerate(people):
            known[i, :] = list(row)
    return Rounds(*(np.concatenate([part[k] for part in parts]) for k in range(3)), known)


def _rounds(model: nn.Module, training: LocalTraining, photos, indices: range, seed: int, privatise
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    feats, images, masks, people = [], [], [], []
    for i in indices:
        rng = np.random.default_rng([seed, 0x1A7, i])
        x, y, *who = photos(rng, training.n_images)
        observed = site_update(model, x, y, training)
        if privatise is not None:
            observed = privatise(observed, rng)
        feats.append(features(observed, training))
        images.append(x)
        masks.append(y)
        people += who
    return np.stack(feats), np.stack(images), np.stack(masks), people


def best_pairing(costs: torch.Tensor) -> torch.Tensor:
    """Per sample, the mean cost of the best pairing of its n outputs with its n targets
    (``costs``: N x n x n, output i against target j), by the Hungarian method on the
    detached costs; the gradient flows through the chosen pairs. Equal to the minimum over
    all n! orders, at any n (a site's K surrogates of several photos are many images).

    >>> costs = torch.tensor([[[5.0, 1.0], [1.0, 5.0]]])
    >>> best_pairing(costs).item()
    1.0
    """
    from scipy.optimize import linear_sum_assignment

    n = costs.shape[1]
    chosen = torch.stack([torch.as_tensor(linear_sum_assignment(c)[1])
                          for c in costs.detach().cpu().numpy()]).to(costs.device)
    return costs.gather(2, chosen.unsqueeze(2)).squeeze(2).sum(1).div(n).mean()


def _set_loss(out: torch.Tensor, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The photos' squared error plus 0.1 x the masks' cross-entropy (means over pixels)
    under the best pairing of each sample's n outputs with its n photos (a site's photos
    are a set). Pairwise by expansion: ``(o - x)^2 = o^2 - 2ox + x^2`` and the cross-entropy
    of a logit l against y, ``softplus(l) - l y``."""
    o, logits = out[:, :, :3].flatten(2), out[:, :, 3].flatten(2)
    x, y = images.flatten(2), masks.flatten(2)
    pixels, area = x.shape[2], y.shape[2]
    squared = (o.pow(2).sum(2, keepdim=True) - 2 * o @ x.transpose(1, 2)
               + x.pow(2).sum(2).unsqueeze(1)) / pixels
    bce = (nn.functional.softplus(logits).sum(2, keepdim=True) - logits @ y.transpose(1, 2)) / area
    return best_pairing(squared + 0.1 * bce)


def train_inverter(rounds: Rounds, *, epochs: int = 20, batch_size: int = 64, seed: int = 0) -> Inverter:
    """Fit an :class:`Inverter` to simulated rounds (:func:`simulate`)."""
    torch.manual_seed(seed)
    f = torch.from_numpy(rounds.features).float()
    x = torch.from_numpy(rounds.images).permute(0, 1, 4, 2, 3).float() / 255
    y = torch.from_numpy(rounds.masks).float()
    net = Inverter(f.shape[1], x.shape[1])
    z = net.standardise.fit_(f)(f)  # standardised once
    return fit(net, lambda b: _set_loss(net.head(z[b]), x[b], y[b]), len(z), epochs=epochs,
               batch_size=batch_size, lr=2e-3, seed=seed)

def fit(net: nn.Module, batch_loss, count: int, *, epochs: int, batch_size: int, lr: float, seed: int,
        weight_decay: float = 0.0) -> nn.Module:
    """Mini-batches of ``count`` samples, AdamW with a one-cycle schedule;
    ``batch_loss(indices)`` is one batch's loss. Returns ``net`` in eval mode."""
    optimiser = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(count / batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, lr, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(count, generator=generator)
        for start in range(0, count, batch_size):
            optimiser.zero_grad()
            batch_loss(order[start : start + batch_size]).backward()
            optimiser.step()
            schedule.step()
    return net.eval()


@torch.no_grad()
def learned_invert(net: Inverter, observed: Observed, training: LocalTraining
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The inverter's photos (uint8 n x 64 x 64 x 3) and masks (bool n x 64 x 64) for one
    observed update."""
    out = net(torch.from_numpy(features(observed, training)).float()[None])[0]
    return ((out[:, :3].permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8),
            (out[:, 3] > 0).numpy())


class InvertedGalleryAttacker(Attacker):
    """Names the patient a reconstruction shows by its nearest neighbour among
    reconstructions of the patients' known photos: the server puts each gallery photo
    through the same round and the same inversion, so gallery and probe are blurred alike
    (``images``: those reconstructions, ``labels``: their patients 0..n-1). Distance:
    pixels, each image standardised; a patient's score is minus the distance to their
    nearest reconstruction."""

    name = "inverted"

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.gallery, self.labels = self._standardise(images), np.asarray(labels)

    @staticmethod
    def _standardise(images: np.ndarray) -> np.ndarray:
        x = np.asarray(images, np.float32).reshape(len(images), -1)
        return (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-6)

    def scores(self, images: np.ndarray) -> np.ndarray:
        probes = self._standardise(images)
        distances = (probes**2).sum(1)[:, None] - 2 * probes @ self.gallery.T + (self.gallery**2).sum(1)[None]
        return -np.stack([distances[:, self.labels == p].min(1) for p in range(self.labels.max() + 1)], 1)
