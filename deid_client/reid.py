"""Phantom re-identification: can a photo still be linked to its patient?

A small CNN learns to name each synthetic patient from several photos taken in
different sessions (lighting, backdrop, clothes, jewellery, flush) with
different lesions. Shown a surrogate, it tells whether the surrogate still
looks like the patient it came from.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .phantom import Identity, Phantom, new_session, render_phantom, sample_identity, sample_lesion

__all__ = ["photo_sessions", "reid_cohort", "ReIdNet", "train_reid", "identify", "top1"]


def photo_sessions(
    n_patients: int, photos_per_patient: int, *, size: int = 64, seed: int = 0
) -> tuple[list[list[Phantom]], list[Identity]]:
    """``photos_per_patient`` phantoms of each of ``n_patients`` people, one per photo
    session (:func:`~deid_client.phantom.new_session`), each with a fresh random lesion."""
    rng = np.random.default_rng([seed, 0x1D])
    sessions, people = [], []
    for _ in range(n_patients):
        person = sample_identity(rng)
        people.append(person)
        sessions.append([render_phantom(new_session(person, rng), sample_lesion(rng), size)
                         for _ in range(photos_per_patient)])
    return sessions, people


def reid_cohort(
    n_patients: int, photos_per_patient: int, *, size: int = 64, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, list[Identity]]:
    """Photos (uint8 N x S x S x 3) of :func:`photo_sessions`; labels 0..n_patients-1,
    grouped by patient.

    >>> images, labels, people = reid_cohort(2, 3, size=64)
    >>> images.shape, labels.tolist()
    ((6, 64, 64, 3), [0, 0, 0, 1, 1, 1])
    """
    sessions, people = photo_sessions(n_patients, photos_per_patient, size=size, seed=seed)
    images = np.stack([p.image for patient in sessions for p in patient])
    return images, np.repeat(np.arange(n_patients), photos_per_patient), people


class ReIdNet(nn.Module):
    """Four conv blocks, global pooling, a linear layer naming the patient."""

    def __init__(self, n_patients: int):
        super().__init__()

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out),
                                 nn.ReLU(), nn.MaxPool2d(2))

        self.features = nn.Sequential(block(3, 32), block(32, 64), block(64, 96), block(96, 128),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(128, n_patients))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255)


def train_reid(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int = 25,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    progress: bool = False,
) -> ReIdNet:
    """Train a patient classifier (mirror and brightness augmentation)."""
    torch.manual_seed(seed)
    model = ReIdNet(int(labels.max()) + 1)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    x, y = _tensor(images), torch.from_numpy(np.asarray(labels)).long()
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in tqdm(range(epochs), desc="re-id training", unit="epoch", disable=not progress):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            batch = order[start : start + batch_size]
            xb = x[batch]
            flip = torch.rand(len(batch), generator=generator) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)  # faces are ~symmetric
            xb = xb * (0.85 + 0.3 * torch.rand(len(batch), 1, 1, 1, generator=generator))
            loss = nn.functional.cross_entropy(model(xb), y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()


@torch.no_grad()
def identify(model: ReIdNet, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """The patient each photo is attributed to."""
    model.eval()
    x = _tensor(images)
    return torch.cat([model(x[i : i + batch_size]).argmax(1)
                      for i in range(0, len(x), batch_size)]).numpy()


def top1(model: ReIdNet, images: np.ndarray, labels: np.ndarray) -> float:
    """Share of photos attributed to the right patient."""
    return float((identify(model, images) == np.asarray(labels)).mean())
