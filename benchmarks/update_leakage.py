"""What leaves the hospital: can the server rebuild a site's training photos, and name
its patients, from the weights the site returns? (docs/update_leakage.md)

An honest-but-curious server inverts each site's update: a learned inverter
(``research.learned_inversion``), trained on rounds the server simulates on phantoms of
its own (the phantom world is public) and on new sessions of the patients it knows, to
the photos' pixels and, with the renderer as a generative prior, to the people in them
(``research.prior_inversion``, ``generative`` in the JSON); and the gradient-matching
optimisation with the site's local training replayed (``research.update_inversion``).
Scenarios, each at round-1 weights and at a mid-training checkpoint,
each for mask source ``truth`` (the patients' own photos, no firewall) and ``surrogate``
(the firewall's output at the main job's settings, ``--firewall`` on top: with
``surrogates_per_photo`` K, a site of n photos trains on their n x K surrogates, and the
server, which knows K from the run's settings, trains its inverters on simulated rounds of
n x K photos):

(a) positive control: 1 photo, 1 local step;
(b) a small site: 2 photos, batch 2, 2 local epochs (2 Adam steps, replayed);
(c) the main job's local training (its epochs, batch size and learning rate, from
    ``conf/simulation.yaml``; up to 36 photos): the gradient-matching attack, the update
    taken as one averaged gradient of one batch (masks known);
(d) (b) with the site's own differential privacy (Flower's ``LocalDpMod``: the update
    clipped to ``--dp-clip`` and Gaussian noise ``--dp-noise`` x the clip added).

Per reconstruction, matched to the site's training photos by the Hungarian method: PSNR
and SSIM to the patient's photo and to its surrogate; the patient named (chance 1 /
patients) by the ``dlib`` gallery and the defence-aware CNN (``aware``) over the patients'
other sessions, and by two attackers of the update channel itself, who put those known
sessions through the same round and inversion and compare like with like: nearest
neighbour (``inverted``) and a CNN trained on them (``inverted-cnn``); the Dice of the
recovered masks. ``reid_worst`` is the strongest attacker's rate.

    python benchmarks/update_leakage.py --json            # about 45 min on 2 cores
    python benchmarks/update_leakage.py --json --firewall surrogates_per_photo=2 --figures outputs/k2
    python benchmarks/update_leakage.py --combine seed0.json seed1.json   # several seeds' reports
    python benchmarks/update_leakage.py --table seed0.json    # a report as the docs' table

``--combine`` pools reports (of other seeds: other patients) into the naming of patients
from the surrogate updates (:func:`surrogate_naming`): each attacker's count over every
cell, and each cell's over the reports, with exact binomial intervals.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import _repo  # noqa: F401  (research/ from the checkout)
from deid_client.editing.backends import load_backend
from deid_client.figures import image_grid
from deid_client.firewall import Firewall
from deid_client.firewall.config import FirewallConfig, settings_record
from deid_client.firewall.firewall import surrogate_key
from deid_client.io.images import write_image
from deid_client.metrics import dice
from deid_client.phantom.language import attributes_of
from deid_client.task.settings import node_settings
from deid_client.task.segmentation import build_unet, round_lr, train_epochs
from research.reid import AwareAttacker, CnnAttacker, DlibAttacker, photo_sessions
from research.learned_inversion import (InvertedGalleryAttacker, ServerPhotos, learned_invert,
                                       server_phantoms, simulate, train_inverter)
from research.prior_inversion import prior_invert, train_prior_inverter
from research.update_inversion import LocalDp, LocalTraining, image_scores, invert, match, site_update
from simulations.run import compose_run_config

GALLERY_SESSIONS = 3  # the patients' photos the re-identification attackers know
SOURCES = ("truth", "surrogate")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def checkpoints(seed: int, dp: bool) -> dict[str, torch.nn.Module]:
    """Round-1 weights, and a model partway through training (5 epochs on phantoms of
    other people: Dice well above zero, far from converged)."""
    first = build_unet("resnet18", 3, seed=seed, norm="group" if dp else "batch")
    mid = build_unet("resnet18", 3, seed=seed, norm="group" if dp else "batch")
    images, masks, _ = server_phantoms(np.random.default_rng([seed, 0x3D]), 48)
    train_epochs(mid, images, masks, epochs=5, batch_size=4, lr=0.002, seed=seed)
    return {"round-1": first, "mid-training": mid}


class Audit:
    """The cohort, its surrogates, and the attackers that name patients."""

    def __init__(self, n_patients: int, seed: int, firewall: FirewallConfig):
        sessions, self.people = photo_sessions(n_patients, GALLERY_SESSIONS + 1, size=64, seed=seed)
        gallery = np.stack([p.image for s in sessions for p in s[:GALLERY_SESSIONS]])
        labels = np.repeat(np.arange(n_patients), GALLERY_SESSIONS)
        self.gallery, self.gallery_labels = gallery, labels
        self.gallery_masks = np.stack([p.mask for s in sessions for p in s[:GALLERY_SESSIONS]])
        _log("attackers: dlib gallery, defence-aware CNN")
        self.attackers = [DlibAttacker(gallery, labels),
                          AwareAttacker([s[:GALLERY_SESSIONS] for s in sessions], self.people, seed=seed)]
        self.photos = np.stack([s[GALLERY_SESSIONS].image for s in sessions])
        self.masks = np.stack([s[GALLERY_SESSIONS].mask for s in sessions])
        self.firewall = settings_record(firewall, complete=True)
        self.per_photo = k = firewall.surrogates_per_photo  # what a site trains on per photo
        _log(f"firewall: {n_patients} photos, {k} surrogates each")
        # the folder batch's keys: surrogate j of a photo draws its own target and noise
        made = Firewall(firewall, load_backend(firewall.model))(
            [p for p in self.photos for _ in range(k)],
            [attributes_of(p) for p in self.people for _ in range(k)],
            keys=[surrogate_key(f"patient-{i}", j) for i in range(n_patients) for j in range(k)])
        self.surrogates = np.stack([r.surrogate for r in made]).reshape(n_patients, k, *self.photos.shape[1:])
        self.surrogate_masks = np.stack([r.mask for r in made]).reshape(n_patients, k, *self.masks.shape[1:])
        self.released = float(np.mean([r.released for r in made]))
        self.chance = 1.0 / n_patients
        self.reid_originals = self.named(self.photos, np.arange(n_patients))
        # the surrogates themselves: what the photo attackers read without any update
        self.reid_surrogates = self.named(self.training_pairs("surrogate", list(range(n_patients)))[0],
                                          np.repeat(np.arange(n_patients), k))

    def named(self, images: np.ndarray, patients: np.ndarray) -> dict[str, float]:
        """Each photo attacker's rate of naming patient ``patients[i]`` in ``images[i]``."""
        return {a.name: float((a.identify(images) == patients).mean()) for a in self.attackers}

    def images_per_photo(self, source: str) -> int:
        """How many training images a site's photo gives under ``source``."""
        return 1 if source == "truth" else self.per_photo

    def training_pairs(self, source: str, site: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """What a site of the patients ``site`` trains on: patient ``site[t // per]``'s image
        is ``t``, with ``per`` = :meth:`images_per_photo`."""
        if source == "truth":
            return self.photos[site], self.masks[site]
        images, masks = self.surrogates[site], self.surrogate_masks[site]
        return images.reshape(-1, *images.shape[2:]), masks.reshape(-1, *masks.shape[2:])

    def score(self, recovered: np.ndarray, recovered_masks: np.ndarray | None, source: str,
              sites: list[list[int]], more_attackers: tuple = (), prior: np.ndarray | None = None) -> dict:
        """Every figure over all sites' reconstructions (``recovered``: per site, n photos);
        ``more_attackers`` name patients too (those of the update channel); ``prior``: the
        attacker's prior guess (its simulated photos' mean) for RDLV, the SSIM gained over
        it relative to it (Hatamizadeh et al. 2023)."""
        rows = {"psnr_patient": [], "ssim_patient": [], "psnr_surrogate": [], "ssim_surrogate": [],
                "mask_dice": [], "rdlv_patient": []}
        patient_of, shown = [], []
        for site, (photos, masks) in zip(sites, zip(recovered, recovered_masks or [None] * len(sites))):
            trained, trained_masks = self.training_pairs(source, site)
            pairs = match(photos, trained)
            for r, t in enumerate(pairs):
                patient = site[t // self.images_per_photo(source)]
                surrogate = trained[t] if source == "surrogate" else self.surrogates[patient, 0]
                psnr, ssim = image_scores(photos[r], self.photos[patient])
                psnr_s, ssim_s = image_scores(photos[r], surrogate)
                rows["psnr_patient"].append(psnr)
                rows["ssim_patient"].append(ssim)
                rows["psnr_surrogate"].append(psnr_s)
                rows["ssim_surrogate"].append(ssim_s)
                if masks is not None:
                    rows["mask_dice"].append(dice(masks[r], trained_masks[t]))
                if prior is not None:
                    base = image_scores(prior, self.photos[patient])[1]
                    rows["rdlv_patient"].append((ssim - base) / base)
                patient_of.append(patient)
                shown.append(photos[r])
        out = {k: round(float(np.mean(v)), 4) for k, v in rows.items() if v}
        shown, patient_of = np.stack(shown), np.array(patient_of)
        attackers = [*self.attackers, *more_attackers]
        reid = {a.name: float((a.identify(shown) == patient_of).mean()) for a in attackers}
        if self.images_per_photo(source) > 1 and all(len(site) == 1 for site in sites):
            # a site of one photo: its K reconstructions all show that patient, so the
            # attacker pools them (research.reid.Attacker.identify_pooled)
            groups = np.stack([np.stack(photos) for photos in recovered])
            patients = np.array([site[0] for site in sites])
            reid |= {f"{a.name}-pooled": float((a.identify_pooled(groups) == patients).mean())
                     for a in attackers}
        out.update({f"reid_{k}": round(v, 4) for k, v in reid.items()})
        out["reid_worst"] = max(reid.values())
        out["reconstructions"] = len(patient_of)
        return out


#: Each learned scenario's site, and the rounds the server simulates for it (a round of (b)
#: or (d) costs four of (a): two photos, two steps).
SCENARIOS = {
    "a": dict(n=1, epochs=1, batch_size=4, rounds=2500),
    "b": dict(n=2, epochs=2, batch_size=2, rounds=900),
    "d": dict(n=2, epochs=2, batch_size=2, rounds=900),
}


def gallery_reconstructions(audit: Audit, inverters: dict, observe, n_images: int) -> dict:
    """The server's own gallery of reconstructions, per inverter: (photos, their patients).
    Each known photo of the patients goes through the same round (with other patients'
    photos of the same session, as a site of ``n_images``) and the same inversion."""
    n = len(audit.people)
    known = {k: ([], []) for k in inverters}
    for session in range(GALLERY_SESSIONS):
        photos_of = [p * GALLERY_SESSIONS + session for p in range(n)]
        for i in range(0, n - n_images + 1, n_images):
            site = photos_of[i : i + n_images]
            observed = observe(audit.gallery[site], audit.gallery_masks[site])
            for method, invert_with in inverters.items():
                photos, _ = invert_with(observed)
                for r, t in enumerate(match(photos, audit.gallery[site])):
                    known[method][0].append(photos[r])
                    known[method][1].append(audit.gallery_labels[site[t]])
    return known


def learned_attack(audit: Audit, scenario: str, name: str, model, server_round: int, sims: int | None,
                   seed: int, privatise=None, share: float = 0.5, workers: int = 2) -> tuple[dict, dict]:
    """One scenario at one checkpoint, both mask sources, both inverters (pixels, and the
    generative prior: the person read and rendered). The inverters are trained once per
    update size on the same rounds: a site's n photos, or their n x K surrogates."""
    spec = SCENARIOS[scenario]
    sims = sims or spec["rounds"]
    n = len(audit.people)
    sites = [list(range(i, i + spec["n"])) for i in range(0, n - spec["n"] + 1, spec["n"])]
    rng = np.random.default_rng([seed, 0xD9])
    results, pictures, seconds = {"generative": {}}, {}, 0.0
    for per in sorted({audit.images_per_photo(s) for s in SOURCES}):
        sources = [s for s in SOURCES if audit.images_per_photo(s) == per]
        training = LocalTraining(n_images=spec["n"] * per, epochs=spec["epochs"],
                                 batch_size=spec["batch_size"], lr=round_lr(0.002, server_round, 5),
                                 seed=server_round)
        started = time.perf_counter()
        rounds = simulate(model, training, ServerPhotos(tuple(audit.people), share), sims, seed=seed,
                          privatise=privatise, workers=workers)
        simulated = time.perf_counter() - started
        pixels, people = train_inverter(rounds, seed=seed), train_prior_inverter(rounds, seed=seed)
        seconds += time.perf_counter() - started
        inverters = {"pixels": lambda o, inv=pixels, t=training: learned_invert(inv, o, t),
                     "generative": lambda o, inv=people, t=training: (prior_invert(inv, o, t), None)}

        def observe(photos: np.ndarray, masks: np.ndarray, training=training):
            observed = site_update(model, photos, masks, training)
            return observed if privatise is None else privatise(observed, rng)

        known = gallery_reconstructions(audit, inverters, observe, training.n_images)
        recovered = {(k, source): ([], []) for k in inverters for source in sources}
        for source in sources:
            for site in sites:
                observed = observe(*audit.training_pairs(source, site))
                for method, invert_with in inverters.items():
                    photos, got = invert_with(observed)
                    recovered[method, source][0].append(photos)
                    recovered[method, source][1].append(got)
        mean_photo = (rounds.images.reshape(-1, 64, 64, 3).mean(0) + 0.5).astype(np.uint8)
        for method in inverters:
            images, labels = np.stack(known[method][0]), np.array(known[method][1])
            channel = [InvertedGalleryAttacker(images, labels), CnnAttacker(images, labels, seed=seed)]
            channel[1].name = "inverted-cnn"
            for source in sources:
                photos, masks = recovered[method, source]
                scores = audit.score(photos, None if masks[0] is None else masks, source, sites, channel,
                                     prior=mean_photo)
                scores |= {"images_in_update": training.n_images, "local_steps": training.steps}
                (results if method == "pixels" else results["generative"])[source] = scores
                key = source if method == "pixels" else f"generative/{source}"
                pictures[key] = [p for site_photos in photos for p in site_photos]
        _log(f"  ({scenario}) {name}, {training.n_images} images an update: {sims} rounds simulated in "
             f"{simulated:.0f} s, inverters {time.perf_counter() - started - simulated:.0f} s")
    for method, out in (("pixels", results), ("generative", results["generative"])):
        _log(f"  ({scenario}) {name}, {method}: truth SSIM {out['truth']['ssim_patient']:.2f}, re-ID "
             f"{out['truth']['reid_worst']:.2f} (dlib {out['truth']['reid_dlib']:.2f}, aware "
             f"{out['truth']['reid_aware']:.2f}); surrogate SSIM to surrogate "
             f"{out['surrogate']['ssim_surrogate']:.2f}, re-ID {out['surrogate']['reid_worst']:.2f}")
    return {**results, "simulated_rounds": sims, "inverter_seconds": round(seconds, 1)}, pictures


def main_job_attack(audit: Audit, name: str, model, server_round: int, run: dict, iterations: int,
                    seed: int) -> dict:
    """(c): a round of the main job's local training (``run``: its epochs, batch size and
    learning rate; its photos, up to 36, or their surrogates) attacked by gradient
    matching, its update taken as one averaged gradient of one batch, masks known."""
    out = {}
    batch = int(run["batch-size"])
    site = list(range(min(36, len(audit.people))))
    for source in SOURCES:
        photos, masks = audit.training_pairs(source, site)
        real = LocalTraining(n_images=len(photos), epochs=int(run["local-epochs"]), batch_size=batch,
                             lr=round_lr(float(run["lr"]), server_round, int(run["num-server-rounds"])),
                             seed=server_round)
        observed = site_update(model, photos, masks, real)
        as_one = LocalTraining(n_images=batch, epochs=1, batch_size=batch, lr=real.lr, seed=server_round,
                               augment=False)
        got = invert(model, observed, as_one, masks=masks[:batch], iterations=iterations, restarts=1,
                     seed=seed)
        out[source] = audit.score([got.images], None, source, [site])
    return out


def optimisation_only(audit: Audit, model, patients: int, iterations: int, seed: int) -> dict:
    """(a) by gradient matching alone (masks known), no learned prior: the published
    attack at this budget."""
    training = LocalTraining(n_images=1, epochs=1, batch_size=4, lr=0.002, seed=1)
    recovered = []
    for i in range(patients):
        observed = site_update(model, *audit.training_pairs("truth", [i]), training)
        recovered.append(invert(model, observed, training, masks=audit.masks[[i]],
                                iterations=iterations, restarts=1, seed=seed).images)
    return audit.score(recovered, None, "truth", [[i] for i in range(patients)])


def figure(audit: Audit, pictures: dict, path: Path, rows: int = 8) -> None:
    """Per row: patient | surrogate | from the truth update | from the surrogate update,
    by the pixel inverter, then by the generative prior."""
    tiles, per = [], audit.per_photo  # a site's update holds each photo's K surrogates
    for i in range(min(rows, len(audit.people))):
        tiles += [audit.photos[i], audit.surrogates[i, 0], pictures["truth"][i],
                  pictures["surrogate"][i * per], pictures["generative/truth"][i],
                  pictures["generative/surrogate"][i * per]]
    write_image(path, image_grid(tiles, ncols=6))


#: The columns of :func:`markdown_table`: a header and the score it shows (``None``: the
#: worst pooled attacker).
COLUMNS = {"SSIM to patient": "ssim_patient", "SSIM to surrogate": "ssim_surrogate",
           "PSNR to patient": "psnr_patient", "RDLV": "rdlv_patient", "mask Dice": "mask_dice",
           "dlib": "reid_dlib", "aware": "reid_aware", "inverted": "reid_inverted",
           "inverted-cnn": "reid_inverted-cnn", "pooled, worst": None, "worst": "reid_worst"}


def markdown_table(report: dict) -> str:
    """One report (this benchmark's JSON) as the table of ``docs/update_leakage.md``: a row
    per scenario, checkpoint, mask source and inverter, then gradient matching alone.

    >>> cell = {"ssim_patient": 0.5, "reid_dlib": 0.25, "reid_dlib-pooled": 0.5, "reid_worst": 0.25}
    >>> row = markdown_table({"scenarios": {"c/round-1": {"truth": cell, "surrogate": cell}},
    ...                       "optimisation_only": cell}).splitlines()[2]
    >>> row.split(" | ")[:5], row.split(" | ")[-2:]
    (['| c', 'round-1', 'truth', 'gradient matching', '0.50'], ['0.50', '**0.25** |'])
    """
    def cells(scores: dict) -> list[str]:
        pooled = [v for k, v in scores.items() if k.endswith("-pooled")]
        out = []
        for key in COLUMNS.values():
            value = scores.get(key) if key else (max(pooled) if pooled else None)
            out.append("–" if value is None else f"{value:.1f}" if key == "psnr_patient" else f"{value:.2f}")
        out[-1] = f"**{out[-1]}**"
        return out

    rows = [["scenario", "weights", "mask source", "inverter", *COLUMNS], ["---"] * (4 + len(COLUMNS))]
    for key, result in report["scenarios"].items():
        scenario, weights = key.split("/")
        for source in SOURCES:
            if scenario == "c":
                rows.append([scenario, weights, source, "gradient matching", *cells(result[source])])
                continue
            rows.append([scenario, weights, source, "pixels", *cells(result[source])])
        if scenario != "c":
            rows += [[scenario, weights, source, "generative", *cells(result["generative"][source])]
                     for source in SOURCES]
    rows.append(["a, gradient matching alone", "round-1", "truth", "–", *cells(report["optimisation_only"])])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def surrogate_naming(reports: list[dict]) -> dict:
    """How often each attacker named the patient from the ``surrogate`` updates of (a) and
    (b), both checkpoints and both inverters, over ``reports`` (this benchmark's JSON, one
    per seed): per attacker, and per cell (scenario, checkpoint, inverter, attacker) summed
    over the reports, as ``named`` of ``trials`` with an exact 95% interval. A single
    attacker's trials are the reconstructions, a pooled one's (``-pooled``) the patients.

    >>> cell = {"reid_aware": 0.25, "reid_aware-pooled": 0.5, "reid_worst": 0.5, "reconstructions": 4}
    >>> report = {"patients": 2, "scenarios": {"a/round-1": {"surrogate": cell, "generative": {}}}}
    >>> named = surrogate_naming([report, report])
    >>> named["attackers"]["aware"]["named"], named["attackers"]["aware-pooled"]["trials"]
    (2, 4)
    >>> named["worst_cell"]["cell"], named["worst_cell"]["rate"]
    ('a/round-1 pixels aware-pooled', 0.5)
    """
    from scipy.stats import binomtest

    attackers: dict[str, list[int]] = {}
    cells: dict[str, list[int]] = {}
    for report in reports:
        for key, scenario in report["scenarios"].items():
            if key.split("/")[0] not in ("a", "b"):
                continue
            for inverter, result in (("pixels", scenario["surrogate"]),
                                     ("generative", scenario.get("generative", {}).get("surrogate"))):
                for name, rate in (result or {}).items():
                    if not name.startswith("reid_") or name == "reid_worst":
                        continue
                    attacker = name.removeprefix("reid_")
                    trials = report["patients"] if attacker.endswith("-pooled") else result["reconstructions"]
                    for tally in (attackers.setdefault(attacker, [0, 0]),
                                  cells.setdefault(f"{key} {inverter} {attacker}", [0, 0])):
                        tally[0] += round(rate * trials)
                        tally[1] += trials

    def entry(named: int, trials: int) -> dict:
        interval = binomtest(named, trials).proportion_ci(method="exact")
        return {"named": named, "trials": trials, "rate": round(named / trials, 4),
                "interval": [round(interval.low, 3), round(interval.high, 3)]}

    worst = max(cells, key=lambda c: cells[c][0] / cells[c][1])
    return {"reports": len(reports), "chance": 1 / reports[0]["patients"],
            "attackers": {a: entry(*t) for a, t in sorted(attackers.items())},
            "worst_cell": {"cell": worst} | entry(*cells[worst]),
            "cells": {c: entry(*t) for c, t in sorted(cells.items())}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=24)
    parser.add_argument("--simulated-rounds", type=int, default=None,
                        help="rounds the server simulates to train each inverter (default: per scenario, "
                             + ", ".join(f"{k} {v['rounds']}" for k, v in SCENARIOS.items()) + ")")
    parser.add_argument("--workers", type=int, default=2, help="processes simulating rounds")
    parser.add_argument("--iterations", type=int, default=100, help="gradient-matching iterations")
    parser.add_argument("--dp-clip", type=float, default=1.0)
    parser.add_argument("--dp-noise", type=float, default=0.01,
                        help="the noise's standard deviation, in units of the clip")
    parser.add_argument("--figures", type=Path, default=Path("docs/generated/update_leakage"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--firewall", default="",
                        help="firewall overrides on top of the main job's (its run config's firewall key)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--combine", nargs="+", type=Path, metavar="REPORT",
                        help="pool these reports (--json output, one per seed) instead of running")
    parser.add_argument("--table", type=Path, metavar="REPORT",
                        help="print this report (--json output) as docs/update_leakage.md's table")
    args = parser.parse_args()
    if args.table:
        print(markdown_table(json.loads(args.table.read_text())))
        return
    if args.combine:
        named = surrogate_naming([json.loads(p.read_text()) for p in args.combine])
        if args.json:
            print(json.dumps(named, indent=2))
            return
        print(f"{named['reports']} reports, chance {named['chance']:.3f}; surrogate updates, (a) and (b):")
        for attacker, e in named["attackers"].items():
            print(f"  {attacker:<20} {e['named']:>3} / {e['trials']:<4} {e['rate']:.3f} {e['interval']}")
        w = named["worst_cell"]
        print(f"worst cell: {w['cell']}: {w['named']} / {w['trials']} = {w['rate']:.3f} {w['interval']}")
        return
    started = time.perf_counter()
    run = compose_run_config()  # the main job's: its firewall, and (c)'s local training
    run["firewall"] = f"{run['firewall']} {args.firewall}".strip()
    firewall = node_settings(run, {}).data.firewall_settings  # what a site of the main job composes
    per_photo = firewall.surrogates_per_photo
    largest = max(spec["n"] for spec in SCENARIOS.values()) * per_photo
    if args.patients < largest:  # the server's gallery sites hold as many patients as an update images
        parser.error(f"--patients {args.patients} is too few: an update of scenario (b) holds {largest} "
                     f"images at {per_photo} surrogates per photo, and the server's known sessions go "
                     f"through rounds of that size (use at least {largest})")
    audit = Audit(args.patients, args.seed, firewall)
    report = {"patients": args.patients, "surrogates_per_photo": audit.per_photo, "chance": audit.chance,
              "firewall": audit.firewall,
              "main_job": {k: run[k] for k in ("local-epochs", "batch-size", "lr", "num-server-rounds")},
              "reid_originals": audit.reid_originals,
              "reid_surrogates": audit.reid_surrogates,
              "surrogates_released_by_gate": audit.released, "scenarios": {}}
    args.figures.mkdir(parents=True, exist_ok=True)
    models = checkpoints(args.seed, dp=False)
    for name, model in models.items():
        server_round = 1 if name == "round-1" else 3
        for scenario in ("a", "b"):
            result, pictures = learned_attack(audit, scenario, name, model, server_round,
                                              args.simulated_rounds, seed=args.seed, workers=args.workers)
            report["scenarios"][f"{scenario}/{name}"] = result
            figure(audit, pictures, args.figures / f"{scenario}_{name}.png")
        _log(f"  (c) {name}")
        report["scenarios"][f"c/{name}"] = main_job_attack(audit, name, model, server_round, run,
                                                           args.iterations, args.seed)
    dp_model = checkpoints(args.seed, dp=True)["round-1"]
    result, pictures = learned_attack(audit, "d", "round-1", dp_model, 1, args.simulated_rounds,
                                      seed=args.seed, privatise=LocalDp(args.dp_clip, args.dp_noise),
                                      workers=args.workers)
    report["scenarios"]["d/round-1"] = result | {"dp_clip": args.dp_clip, "dp_noise": args.dp_noise}
    figure(audit, pictures, args.figures / "d_round-1.png")
    _log("  (a) by gradient matching alone")
    report["optimisation_only"] = optimisation_only(audit, models["round-1"], 4, args.iterations, args.seed)
    report["seconds"] = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report["scenarios"].items():
            for source in SOURCES:
                print(key, source, value[source])


if __name__ == "__main__":
    main()
