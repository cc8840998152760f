"""What closes the face gap: trainer variants on the study's surrogate cells, in process.

Training through the firewall costs a quarter of the Dice, and the faces cost it, not
the labels (docs/training.md). This proxy runs the study's FedAvg cell (the same node
data and cache as ``python -m simulations.run --config-name study``, the product's
``train_epochs`` and ``score``, examples-weighted averaging of every array) with a
trainer *variant*, and scores the global model on the sites' held-out originals (the
study's figure) and on more held-out originals from other cohorts ("test", less noisy).

    python -m research.face_gap --variants baseline lesion_mix --seeds 0 --non-iid 0.2 0.8

Variants (``VARIANTS``):

- ``baseline``: the product's trainer;
- ``lesion_mix``: each site also trains on every surrogate's lesion carried onto another of
  its surrogates' twins (``deid_client.firewall.masks.carry_lesion``: the same pixels
  the firewall carries a patient's lesion with), so a lesion is seen on two faces;
- ``repeat``: the site's pairs twice (the steps ``lesion_mix`` takes, no new faces: its
  control);
- ``standardise``: each photo standardised per channel before the U-Net (skin tone and
  lighting taken out), in training and in scoring alike;

A firewall setting is tried with ``--firewall`` instead (e.g. ``lesion_gain=1.25``: the
carried lesion made as red against the skin as a patient's, a variant here first and now
the firewall's own, ``deid_client.firewall.masks.carry_lesion``).

``--contrast`` measures instead how the lesions look on what each site trains on
(:func:`lesion_contrast`): the surrogates with their masks and twins, and the patients'
photos with their true masks and exact twins.

Every variant is scored twice: as the federation's model is, and with its BatchNorm
statistics re-estimated at each site on that site's own photos (AdaBN; ``*_adapted``):
the site has its patients' photos, and statistics used there and never sent leave no
trace in the weights. A test cohort adapts on its own photos.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deid_client.firewall.masks import carry_lesion, differential_mask
from deid_client.firewall.folder import read_outputs
from deid_client.task.data import DataConfig, load_node_data, phantom_samples
from deid_client.task.segmentation import build_unet, round_lr, score, train_epochs

__all__ = ["VARIANTS", "Site", "study_run_config", "sites", "lesion_mix", "Standardised", "fedavg",
           "lesion_contrast", "main"]


class Site:
    """A site's training pairs (from its mask source: the firewall's surrogates and masks,
    or a research baseline's), the firewall's twins (``surrogate`` only), its held-out
    originals, and the originals it trains on through the firewall."""

    def __init__(self, config: DataConfig, cache_dir: Path):
        data = load_node_data(config, cache_dir)
        key = config.key()
        self.images, self.masks = data.train_images, data.train_masks
        self.twins = None
        if config.mask_source == "surrogate":
            with np.load(cache_dir / f"node-data-{key}.npz") as stored:
                names = stored["released"]
            self.twins = read_outputs(cache_dir / f"firewall-{key}", names, "healthy")
        self.eval_images, self.eval_masks = data.eval_images, data.eval_masks
        # the site's own training photos (never trained on): what it can adapt statistics to
        self.originals = np.stack([p.image for p in phantom_samples(config)[:-len(data.eval_images)]])


def study_run_config(*overrides: str) -> dict:
    """The run config of one study cell (``conf/study.yaml`` with ``overrides``; by default
    the ``surrogate`` mask source)."""
    from simulations.run import compose_run_config

    return compose_run_config("study", ["data.mask_source=surrogate", *overrides])


def sites(run: dict, num_sites: int, cache_dir: Path) -> list[Site]:
    return [Site(_config(run, p, num_sites), cache_dir) for p in range(num_sites)]


def _config(run: dict, partition: int, num_sites: int, **changes) -> DataConfig:
    from deid_client.task.settings import node_settings

    return node_settings(run | changes, {"partition-id": partition, "num-partitions": num_sites}).data


def lesion_mix(site: Site, theta: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The site's pairs, and each surrogate's lesion carried onto another surrogate's twin
    with the surrogate's mask (the mix's differential mask against that twin; checked)."""
    n = len(site.images)
    other = (np.arange(n) + rng.integers(1, n, size=n)) % n  # never its own twin
    mixed = np.stack([carry_lesion(site.images[i], site.twins[i], site.twins[j], theta)
                      for i, j in enumerate(other)])
    masks = np.stack([differential_mask(m, site.twins[j], theta) for m, j in zip(mixed, other)])
    return np.concatenate([site.images, mixed]), np.concatenate([site.masks, masks])


class Standardised(nn.Module):
    """``model`` on photos standardised per image and channel."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = x.std(dim=(2, 3), keepdim=True).clamp_min(1e-3)
        return self.model((x - mean) / std)


def _baseline(site: Site, theta: float, rng: np.random.Generator):
    return site.images, site.masks


def _repeat(site: Site, theta: float, rng: np.random.Generator):
    return np.concatenate([site.images] * 2), np.concatenate([site.masks] * 2)


#: name -> (training pairs of a site, model wrapper)
VARIANTS: dict[str, tuple[Callable, Callable[[nn.Module], nn.Module]]] = {
    "baseline": (_baseline, lambda m: m),
    "lesion_mix": (lesion_mix, lambda m: m),
    "repeat": (_repeat, lambda m: m),
    "standardise": (_baseline, Standardised),
}


def lesion_contrast(images: np.ndarray, masks: np.ndarray, twins: np.ndarray | None = None,
                    ring: int = 3) -> dict[str, float]:
    """How the lesions stand out, mean over the photos with a lesion: CIELAB L*, a* and b*
    inside the mask minus in a ``ring`` pixels wide around it (``dL``, ``da``, ``db``), and,
    with ``twins``, a* inside the mask minus the twin's there (``da_twin``).

    >>> skin = np.full((1, 9, 9, 3), (200, 150, 130), np.uint8)
    >>> red = skin.copy(); red[0, 3:6, 3:6] = (200, 120, 110)
    >>> mask = np.zeros((1, 9, 9), bool); mask[0, 3:6, 3:6] = True
    >>> c = lesion_contrast(red, mask, skin)
    >>> round(c["da"], 1) == round(c["da_twin"], 1) > 10, c["photos"]
    (True, 1)
    """
    from scipy import ndimage
    from skimage.color import rgb2lab

    rows = []
    for i, (image, mask) in enumerate(zip(images, np.asarray(masks, bool))):
        if mask.sum() < 3:
            continue
        around = ndimage.binary_dilation(mask, iterations=ring) & ~mask
        lab = rgb2lab(image)
        row = [lab[..., c][mask].mean() - lab[..., c][around].mean() for c in range(3)]
        if twins is not None:
            row.append(lab[..., 1][mask].mean() - rgb2lab(twins[i])[..., 1][mask].mean())
        rows.append(row)
    means = np.mean(rows, axis=0)
    names = ["dL", "da", "db", "da_twin"][:len(means)]
    return {name: float(m) for name, m in zip(names, means)} | {"photos": len(rows)}


def adapted(model: nn.Module, photos: np.ndarray) -> nn.Module:
    """A copy of ``model`` with its BatchNorm statistics those of ``photos`` (uint8 N x H x W x 3)."""
    local = copy.deepcopy(model)
    x = torch.from_numpy(np.ascontiguousarray(photos)).permute(0, 3, 1, 2).float().div_(255)
    torch.optim.swa_utils.update_bn(torch.utils.data.DataLoader(x, batch_size=16), local)
    return local.eval()


#: photos scored at one site: images, reference masks, and the site's own photos to adapt to
Scored = tuple[np.ndarray, np.ndarray, np.ndarray]


def site_dice(model: nn.Module, sites: list[Scored]) -> dict[str, float]:
    """Per-photo Dice over the sites' photos (as the server averages them): plain, with each
    site's statistics from its own photos (:func:`adapted`), and from the scored photos
    themselves (``_self``: what a site segmenting a batch of photos can do)."""
    plain, local, itself, count = 0.0, 0.0, 0.0, 0
    for images, masks, own in sites:
        plain += score(model, images, masks)["dice"] * len(images)
        local += score(adapted(model, own), images, masks)["dice"] * len(images)
        itself += score(adapted(model, images), images, masks)["dice"] * len(images)
        count += len(images)
    return {"": plain / count, "_adapted": local / count, "_self": itself / count}


def fedavg(model: nn.Module, pairs: list[tuple[np.ndarray, np.ndarray]], run: dict,
           scored: dict[str, list[Scored]]) -> list[dict]:
    """``num-server-rounds`` rounds of FedAvg over the sites' ``pairs``, as the ClientApp
    trains (seed = round, the cosine schedule) and the server averages (by examples);
    the global model's Dice on each of ``scored`` after every round (:func:`site_dice`)."""
    curve = []
    rounds = int(run["num-server-rounds"])
    for server_round in range(1, rounds + 1):
        start = {k: v.clone() for k, v in model.state_dict().items()}
        states, weights = [], []
        for images, masks in pairs:
            model.load_state_dict(start)
            train_epochs(model, images, masks, epochs=int(run["local-epochs"]),
                         batch_size=int(run["batch-size"]), seed=server_round,
                         lr=round_lr(float(run["lr"]), server_round, rounds))
            states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
            weights.append(len(images))
        w = np.array(weights, float) / sum(weights)
        model.load_state_dict({k: sum(float(wi) * s[k].double() for wi, s in zip(w, states)
                                      ).to(start[k].dtype) for k in start})
        curve.append({"round": server_round} | {name + kind: dice for name, sites in scored.items()
                                                for kind, dice in site_dice(model, sites).items()})
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["baseline"], choices=sorted(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--non-iid", nargs="+", type=float, default=[0.2, 0.8])
    parser.add_argument("--firewall", default="", help="the cells' data.firewall overrides")
    parser.add_argument("--mask-source", default="surrogate", help="truth: the reference cell")
    parser.add_argument("--test-cohorts", type=int, default=2, help="extra held-out cohorts to score on")
    parser.add_argument("--contrast", action="store_true",
                        help="print the lesions' contrast (lesion_contrast) per cell instead of training")
    parser.add_argument("--sites", type=int, default=2, help="the cell's clients")
    parser.add_argument("--cache-dir", type=Path, default=Path("outputs/cache"))
    parser.add_argument("--out", type=Path, help="append one JSON line per run here")
    parser.add_argument("--override", nargs="*", default=[],
                        help="more Hydra overrides of the study's config, e.g. simulation.rounds=2")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.contrast:
        for non_iid, seed in ((n, s) for n in args.non_iid for s in args.seeds):
            run = study_run_config(f"data.non_iid={non_iid}", f"data.seed={seed}",
                                   f"simulation.num_clients={args.sites}", f"data.firewall='{args.firewall}'",
                                   *args.override)
            here = sites(run, args.sites, args.cache_dir)
            photos = [p for s in range(args.sites) for p in phantom_samples(_config(run, s, args.sites))]
            measured = {
                "surrogates": lesion_contrast(np.concatenate([s.images for s in here]),
                                              np.concatenate([s.masks for s in here]),
                                              np.concatenate([s.twins for s in here])),
                "patients": lesion_contrast(np.stack([p.image for p in photos]),
                                            np.stack([p.truth for p in photos]),
                                            np.stack([p.twin for p in photos]))}
            cell = {"non_iid": non_iid, "seed": seed, "sites": args.sites, "firewall": args.firewall}
            print(json.dumps(cell | {k: {n: round(v, 2) for n, v in m.items()} for k, m in measured.items()}))
        return
    for non_iid, seed, name in ((n, s, v) for n in args.non_iid for s in args.seeds for v in args.variants):
        run = study_run_config(f"data.non_iid={non_iid}", f"data.seed={seed}", "simulation.num_clients=2",
                               f"data.firewall='{args.firewall}'", f"data.mask_source={args.mask_source}",
                               *args.override)
        theta = _config(run, 0, 2).firewall_settings.theta
        make_pairs, wrap = VARIANTS[name]
        rng = np.random.default_rng([seed, 0xFACE])
        here = sites(run, 2, args.cache_dir)
        pairs = [make_pairs(s, theta, rng) for s in here]
        held = [(s.eval_images, s.eval_masks, s.originals) for s in here]
        test = []
        for cohort in range(args.test_cohorts):
            photos = [p for part in range(2)
                      for p in phantom_samples(_config(run | {"seed": 1000 + 10 * seed + cohort}, part, 2))]
            images = np.stack([p.image for p in photos])
            test.append((images, np.stack([p.truth for p in photos]), images))
        started = time.perf_counter()
        curve = fedavg(wrap(build_unet(str(run["encoder"]), int(run["encoder-depth"]), seed=seed)), pairs,
                       run, {"node": held, "test": test})
        result = {"variant": name, "mask_source": args.mask_source, "non_iid": non_iid, "seed": seed,
                  "firewall": args.firewall,
                  "train_pairs": [len(p[0]) for p in pairs], "curve": curve,
                  "seconds": round(time.perf_counter() - started, 1)}
        print(json.dumps(result), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
