"""Does FlowEdit de-identify and keep the lesion? Measured on phantoms with the phantom model.

    python benchmarks/phantom_deid.py --json          # the figures as one JSON object
    python benchmarks/phantom_deid.py --sweep         # privacy vs lesion IoU over FlowEdit settings
    python benchmarks/phantom_deid.py --pictures out/ # also a grid: source, surrogates, twin, masks

Held-out patients (never seen by the phantom model) are photographed in
several sessions. Four attackers (``research.reid``) learn them from
``--train-sessions`` sessions each: ``cnn`` (a CNN that names them), ``aware`` (the
same CNN trained by an attacker who knows the defence recolours: grayscale photos, each
session also taken with the patient's colours drawn anew), ``dlib`` (dlib's face
embedding, never trained on phantoms, nearest neighbour over those sessions as a
gallery) and ``mimic`` (the CNN trained by an attacker who runs the firewall being
measured on those sessions and learns from its surrogates and twins too; trained anew
for each configuration). ``reid_original_<attacker>`` is each one's top-1 rate on the patients' other
sessions: an attacker that cannot recognise originals proves nothing. One held-out
photo per patient is the source: it gives ``--identities`` surrogates and their healthy
twins (``deid_client.firewall.Firewall``, the settings in
``deid_client/firewall/conf/firewall.yaml``), each with its own target prompt (``min_change``
or more steps from the patient where that is set) and its own noise, as the firewall makes
a photo's ``surrogates_per_photo`` surrogates.
``reid_surrogate_<attacker>`` is the share of surrogates it still attributes to their
patient (chance: 1 / patients), ``reid_twin_<attacker>`` the same for their healthy
twins (released with them); ``reid_surrogate`` and ``reid_twin`` are the worst
attacker's (``worst_attacker``), the figures to quote. ``reid_pooled<K>_*`` is the same
when each attacker is shown a photo's first K surrogates (twins) together and pools them
(``research.reid.Attacker.identify_pooled``): the share of patients it names, the figure for
``surrogates_per_photo=K``. The lesion
IoU compares each surrogate's mask with the source's ground-truth mask.
``lesion_iou_twin_only`` runs the twin edit on the original photo
itself: the mask error that is not due to the identity change (with
``twin_from=patient``, the default, this is the heal the twins are made from).
The baseline, timed in the same run, is the twin edit alone.
The identity gate (``deid_client.firewall.gate``, ``cfg.gate``) judges every surrogate once (the
firewall would retry): ``gate_released`` is the share it passes, ``gated_reid_*`` each
attacker's rate among those, ``gated_lesion_iou_mean`` their lesion IoU.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import _repo  # noqa: F401  (research/ and simulations/ from the checkout)
from deid_client.editing.backends import load_backend
from deid_client.firewall.config import compose_firewall, settings_record
from deid_client.editing.seeds import image_key
from deid_client.figures import comparison_overlay, image_grid, mask_overlay, save_figure
from research.plots import tradeoff_figure
from research.firewall_probes import gate_verdict, heal
from deid_client.io.images import write_image
from deid_client.firewall.masks import calibrate_threshold, differential_mask, erythema_map
from deid_client.metrics import iou
from deid_client.phantom.language import attributes_of
from research.reid import (ATTACKERS, AwareAttacker, CnnAttacker, DlibAttacker, MimicAttacker,
                              photo_sessions, pooled)
from deid_client.firewall import Firewall
from deid_client.firewall.firewall import surrogate_key

BENCH_SEED = 2026  # patients for the figures
SWEEP_SEED = 4242  # other patients for choosing settings, so the figures are not tuned on
# Each grid varies one edit around the defaults of the other (deid_client/firewall/conf/firewall.yaml).
# Equal guidance on both sides cancels the push that both prompts' condition phrase gets from
# guidance (with gamma_tgt > gamma_src the whole face turns red); unequal is kept for comparison.
IDENTITY_GRID = ([{"identity.n_max": n} for n in (18, 20, 22, 25, 28)]
                 + [{"identity.n_max": n, "identity.gamma_src": g, "identity.gamma_tgt": g}
                    for n in (22, 25, 28) for g in (2.5, 3.0, 6.0)]
                 + [{"identity.n_max": 25, "identity.gamma_src": 1.5, "identity.gamma_tgt": 7.0},
                    {"identity.n_max": 28, "identity.n_avg": 2}]
                 # how far the surrogates are from the patient (min_change) against guidance
                 + [{"min_change": m, "identity.gamma_src": g, "identity.gamma_tgt": g}
                    for m in (1, 3) for g in (2.0, 2.5, 3.0, 4.0)])
# Fewer steps over the whole schedule: the identity edit's cost is its transformer calls
# (benchmarks/firewall.py), so this is the CPU's speed lever.
STEPS_GRID = [{"identity.steps": n, "identity.n_max": n} for n in (4, 5, 7, 10, 14, 20, 28)]
# Stronger identity edits against every attacker (the defence-aware one and dlib see what
# colour changes leave: the patient's face geometry).
PRIVACY_GRID = [{"identity.gamma_src": g, "identity.gamma_tgt": g} for g in (2.5, 4.0, 6.0, 9.0)]
# The same guidance with the lesion carried onto the twin (lesion=carried, n_min 0): the identity
# edit no longer has to carry it, so it can be stronger (docs/generated/privacy_guidance.png).
CARRY_GRID = [{"lesion": lesion, "identity.gamma_src": g, "identity.gamma_tgt": g}
              for lesion in ("edited", "carried") for g in (2.5, 4.0, 6.0, 9.0)]
# The privacy levels' curve (docs/generated/privacy_levels.png): the lesion carried onto the twin, whose
# identity edit is FlowEdit over the first steps and then n_min steps of plain sampling of the
# target prompt (the face drawn anew, the photo's pose and layout kept); n_min = steps draws
# the whole twin anew. The edited route (privacy=low) for comparison.
LEVELS_GRID = ([{"lesion": "edited", "identity.n_min": 0}]
               + [{"lesion": "carried", "identity.n_min": n} for n in (0, 4, 5, 6, 7)])
# The contrast term trains the unguided caption difference, so the twin edit is tried with
# equal guidance on both sides; it was trained at t < 0.2, so with short windows.
TWIN_GRID = ([{"twin_from": "surrogate"}] + [{"twin.n_max": n} for n in (2, 3, 4, 6)]
             + [{"twin.n_max": 3, "twin.gamma_src": g, "twin.gamma_tgt": g} for g in (1.5, 2.0)]
             + [{"twin.n_max": 3, "twin.gamma_tgt": 4.0}, {"twin.n_max": 3, "twin.n_avg": 2}])

# What each grid varies around: the settings of the day it was made (its rows in docs/ give
# every value), not today's defaults.
_EDITED_28 = {"privacy": "low", "identity.steps": 28, "identity.n_max": 28}
GRIDS = {"identity": (_EDITED_28, IDENTITY_GRID), "twin": (_EDITED_28, TWIN_GRID),
         "steps": ({"privacy": "low"}, STEPS_GRID), "privacy": ({"privacy": "low"}, PRIVACY_GRID),
         "carry": ({"identity.n_min": 0, "lesion_gain": 1.0}, CARRY_GRID),
         "levels": ({"lesion_gain": 1.0}, LEVELS_GRID)}

def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Patients:
    """Held-out patients, their photo sessions, and the re-ID model trained on them."""

    sessions: list
    people: list
    train_sessions: int
    attackers: list
    reid_original: dict  # attacker name -> its top-1 rate on held-out originals
    reid_seconds: float
    seed: int


def held_out(cohort: Patients) -> tuple[np.ndarray, np.ndarray]:
    """The patients' sessions no attacker trained on, and whose they are."""
    photos = [p.image for s in cohort.sessions for p in s[cohort.train_sessions:]]
    return np.stack(photos), np.repeat(np.arange(len(cohort.people)), len(photos) // len(cohort.people))


def mimic_attacker(firewall: Firewall, cohort: Patients) -> tuple[MimicAttacker, float]:
    """The attacker who runs this firewall (``cfg``) on each patient's training photos, one
    surrogate and its twin per photo with targets drawn as for the benchmark's own, and
    learns from them with the photos; and its rate on the held-out originals."""
    cfg = firewall.cfg
    rng = np.random.default_rng([cohort.seed, 0x313])
    photos, targets, known, labels = [], [], [], []
    for patient, (person, photographed) in enumerate(zip(cohort.people, cohort.sessions, strict=True)):
        mine = photographed[:cohort.train_sessions]
        targets += cfg.prompts.draw_targets(attributes_of(person), len(mine), rng, min_change=cfg.min_change)
        photos += [p.image for p in mine]
        known += [attributes_of(person)] * len(mine)
        labels += [patient] * len(mine)
    made = firewall.synthesise(photos, targets, known)
    mimic = MimicAttacker(np.stack(photos), np.array(labels),
                          np.stack([r.surrogate for r in made] + [r.twin for r in made]),
                          np.array(labels * 2), epochs=60, seed=cohort.seed)
    originals, truth = held_out(cohort)
    return mimic, float((mimic.identify(originals) == truth).mean())


def patients(n_patients: int, train_sessions: int, seed: int) -> Patients:
    sessions, people = photo_sessions(n_patients, train_sessions + 2, size=64, seed=seed)
    train_images = np.stack([p.image for s in sessions for p in s[:train_sessions]])
    labels = np.repeat(np.arange(n_patients), train_sessions)
    started = time.perf_counter()
    _log("attackers: cnn, aware (recoloured grayscale sessions), dlib (gallery)")
    attackers = [CnnAttacker(train_images, labels, epochs=60, seed=seed),
                 AwareAttacker([s[:train_sessions] for s in sessions], people, epochs=60, seed=seed),
                 DlibAttacker(train_images, labels)]
    reid_seconds = time.perf_counter() - started
    cohort = Patients(sessions, people, train_sessions, attackers, {}, reid_seconds, seed)
    originals, truth = held_out(cohort)
    cohort.reid_original.update({a.name: float((a.identify(originals) == truth).mean()) for a in attackers})
    return cohort


def measure(overrides: list[str], cohort: Patients, n_identities: int,
             pictures: Path | None = None) -> dict:
    """Every figure for one configuration (see the module docstring)."""
    cfg = compose_firewall(overrides)
    firewall = Firewall(cfg, load_backend(cfg.model))
    sessions, people, train_sessions = cohort.sessions, cohort.people, cohort.train_sessions
    n_patients, seed = len(people), cohort.seed
    rng = np.random.default_rng([seed, 0xDE1D])
    ious, released, rows, verdicts = [], [], [], []
    twin_only, edit_seconds, twin_seconds, tiles = [], 0.0, 0.0, []
    diffs, truths = [], []  # for the threshold these surrogates would have wanted
    for patient, (person, photos) in enumerate(zip(people, sessions, strict=True)):
        source = photos[train_sessions]
        known = attributes_of(person)
        targets = cfg.prompts.draw_targets(known, n_identities, rng, min_change=cfg.min_change)
        started = time.perf_counter()
        (twin,) = heal(firewall, [source.image], [known])
        twin_seconds += time.perf_counter() - started
        twin_only.append(iou(differential_mask(source.image, twin, cfg.theta, min_size=cfg.min_size),
                             source.mask))
        started = time.perf_counter()
        keys = [surrogate_key(image_key(source.image), k) for k in range(len(targets))]
        surrogates = firewall.synthesise([source.image] * len(targets), targets, [known] * len(targets),
                                         keys=keys)
        edit_seconds += time.perf_counter() - started
        for slot, (target, result) in enumerate(zip(targets, surrogates)):
            ious.append(iou(result.mask, source.mask))
            diffs.append(erythema_map(result.surrogate, result.twin))
            truths.append(source.mask)
            rows.append((patient, slot, target, ious[-1]))
        released += surrogates
        verdicts += [gate_verdict(firewall, source.image, r) for r in surrogates]
        if pictures is not None and patient < 8:
            tiles += _picture_row(source, twin, surrogates)
        _log(f"  patient {patient + 1}/{n_patients}: IoU "
             f"{np.mean(ious[-n_identities:]):.2f}")
    if tiles:
        pictures.mkdir(parents=True, exist_ok=True)
        write_image(pictures / "surrogates.png", image_grid(tiles, ncols=len(tiles) // min(8, n_patients)))
    patient_of = np.repeat(np.arange(n_patients), n_identities)
    started = time.perf_counter()
    mimic, mimic_original = mimic_attacker(firewall, cohort)
    mimic_seconds = time.perf_counter() - started
    attackers, originals = [*cohort.attackers, mimic], {**cohort.reid_original, mimic.name: mimic_original}
    attacks = attack(attackers, originals, released, patient_of, per_photo=n_identities)
    passed = np.array([v.released for v in verdicts])
    gated = attack(attackers, originals, [r for r, ok in zip(released, passed) if ok], patient_of[passed]) \
        if passed.any() else {}
    by_slot = np.array(ious).reshape(n_patients, n_identities)
    theta_star, iou_at_theta_star = calibrate_threshold(diffs, truths)
    return {
        **attacks,
        "reid_chance": 1.0 / n_patients,
        # the identity gate (one draw per surrogate; the firewall retries up to gate.retries)
        "gate_released": float(passed.mean()),
        "gate_no_face": sum(v.distance is None for v in verdicts),
        "gate_distance_median": float(np.median([v.distance for v in verdicts if v.distance is not None]
                                                or [np.nan])),
        **{f"gated_{k}": v for k, v in gated.items() if k.startswith(("reid_surrogate", "reid_twin",
                                                                       "worst"))},
        "gated_lesion_iou_mean": float(np.mean(np.array(ious)[passed])) if passed.any() else None,
        "lesion_iou_mean": float(np.mean(ious)),
        "lesion_iou_std": float(np.std(ious)),
        "lesion_iou_std_across_identities": float(np.std(by_slot.mean(axis=0))),
        "lesion_iou_median": float(np.median(ious)),
        "lesion_iou_twin_only": float(np.mean(twin_only)),
        "identities_per_patient": n_identities,
        "patients": n_patients,
        "surrogates": len(ious),
        "seconds_per_image": edit_seconds / len(ious),
        "seconds_twin_edit_baseline": twin_seconds / n_patients,
        "reid_training_seconds": round(cohort.reid_seconds, 1),
        "mimic_training_seconds": round(mimic_seconds, 1),  # its firewall runs included
        "theta": cfg.theta,
        "twin_from": cfg.twin_from,
        "lesion": cfg.lesion,
        "theta_star": theta_star,  # calibrated on these same surrogates: for the sweep only
        "lesion_iou_at_theta_star": iou_at_theta_star,
        "identity_edit": {k: v for k, v in vars(cfg.identity).items() if "prompt" not in k},
        "twin_edit": {k: v for k, v in vars(cfg.twin).items() if "prompt" not in k},
        "overrides": overrides,
        "firewall_settings": settings_record(cfg, complete=True),  # what benchmarks/frontier.py matches
        "per_surrogate": [{"patient": p, "identity": s, "target": t, "iou": round(v, 4)}
                          for p, s, t, v in rows],
    }


def attack(attackers: list, originals: dict, released: list, patient_of: np.ndarray,
           per_photo: int = 1) -> dict:
    """Each attacker's share of surrogates and of their twins attributed to their patient
    (``patient_of[i]`` is surrogate ``i``'s; and its rate on held-out originals, from
    ``originals``), and the worst attacker's, which is the figure to quote:
    ``reid_surrogate`` and ``reid_twin`` are the highest over attackers.
    ``per_photo`` > 1: ``released`` is the photos' surrogates in runs of ``per_photo``, and
    ``reid_pooled<K>_*`` each attacker's share of photos named from their first K together,
    for K = 2, 4 and ``per_photo`` (where there are that many), and the worst's."""
    out = {}
    ks = sorted({k for k in (2, 4, per_photo) if 2 <= k <= per_photo})
    for attacker in attackers:
        for kind, images in (("surrogate", [r.surrogate for r in released]),
                             ("twin", [r.twin for r in released])):
            scores = attacker.scores(np.stack(images))
            out[f"reid_{kind}_{attacker.name}"] = float((scores.argmax(1) == patient_of).mean())
            by_photo = scores.reshape(-1, per_photo, scores.shape[1])
            for k in ks:
                out[f"reid_pooled{k}_{kind}_{attacker.name}"] = float(
                    (pooled(by_photo[:, :k]) == patient_of[::per_photo]).mean())
        out[f"reid_original_{attacker.name}"] = originals[attacker.name]
    names = [a.name for a in attackers]
    for k, kind in itertools.product(ks, ("surrogate", "twin")):
        out[f"reid_pooled{k}_{kind}"] = max(out[f"reid_pooled{k}_{kind}_{n}"] for n in names)
    worst = max(names, key=lambda n: (out[f"reid_surrogate_{n}"], out[f"reid_twin_{n}"]))
    dlib = next((a for a in attackers if a.name == "dlib"), None)
    return {"reid_surrogate": max(out[f"reid_surrogate_{n}"] for n in names),
            "reid_twin": max(out[f"reid_twin_{n}"] for n in names),
            "worst_attacker": worst,
            "reid_original": min(originals[n] for n in names),  # the weakest on the originals
            **out,
            "dlib_no_face": None if dlib is None else dlib.no_face}


def _picture_row(source, twin, surrogates) -> list[np.ndarray]:
    """Source, its ground truth, its own twin; per surrogate: image, twin, mask vs truth
    (green: missed, magenta: extra, white: agreement). Doubled in size to be seen."""
    row = [source.image, mask_overlay(source.image, source.mask), twin]
    for r in surrogates:
        row += [r.surrogate, r.twin, comparison_overlay(source.mask, r.mask, r.surrogate)]
    return [np.repeat(np.repeat(t, 2, axis=0), 2, axis=1) for t in row]


def sweep(n_patients: int, n_identities: int, train_sessions: int, out: Path | None,
          grids: str = "both") -> list[dict]:
    """Identity-edit settings (privacy vs IoU), then twin-edit settings (IoU), on sweep patients."""
    cohort = patients(n_patients, train_sessions, SWEEP_SEED)
    _log(f"sweep patients: re-ID of held-out originals {cohort.reid_original}")
    rows = []
    for grid in ("identity", "twin") if grids == "both" else (grids,):
        base, points = GRIDS[grid]
        for point in points:
            overrides = [f"{k}={v}" for k, v in {**base, **point}.items()]
            _log(f"sweep: {' '.join(overrides)}")
            result = measure(overrides, cohort, n_identities)
            rows.append({**point, **{k: round(result[k], 4) for k in (
                "reid_surrogate", "reid_twin", *(f"reid_{k}_{a}" for a in ATTACKERS
                                                 for k in ("surrogate", "twin")),
                "lesion_iou_mean", "lesion_iou_std", "lesion_iou_twin_only",
                "theta_star", "lesion_iou_at_theta_star", "seconds_per_image")}})
            _log(f"  -> {rows[-1]}")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        keys = sorted({k for r in rows for k in r}, key=lambda k: (not k.startswith(("identity", "twin")), k))
        figures = {"privacy": ("identity.gamma_tgt", None, "privacy_tradeoff.png", "guidance γ"),
                   "carry": ("identity.gamma_tgt", "lesion", "privacy_guidance.png", "guidance γ"),
                   "levels": ("identity.n_min", "lesion", "privacy_levels.png", "sampled steps n_min")}
        if grids in figures:
            label, group, name, what = figures[grids]
            figure = tradeoff_figure(rows, list(ATTACKERS), label=label, group=group,
                                     title=f"identity edit, {what} (points): privacy vs lesion")
            save_figure(figure, out / name)
        with open(out / "sweep.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, keys)
            writer.writeheader()
            writer.writerows(rows)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=50)
    parser.add_argument("--identities", type=int, default=5, help="surrogates per patient")
    parser.add_argument("--train-sessions", type=int, default=6, help="re-ID training photos per patient")
    parser.add_argument("--seed", type=int, default=BENCH_SEED)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--sweep", action="store_true", help="run the settings sweep instead")
    parser.add_argument("--sweep-patients", type=int, default=10)
    parser.add_argument("--grid", choices=(*GRIDS, "both"),
                        default="both", help="which part of the sweep to run")
    parser.add_argument("--pictures", type=Path, help="write per-patient picture rows here")
    parser.add_argument("--out", type=Path, help="write the full result (and sweep.csv) here")
    parser.add_argument("overrides", nargs="*", help="firewall config overrides, e.g. twin.n_max=6")
    args = parser.parse_args()
    if args.sweep:
        rows = sweep(args.sweep_patients, 2, args.train_sessions, args.out, args.grid)
        print(json.dumps(rows, indent=1) if args.json else "\n".join(map(str, rows)))
        return
    cohort = patients(args.patients, args.train_sessions, args.seed)
    result = measure(args.overrides, cohort, args.identities, args.pictures)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "phantom_deid.json").write_text(json.dumps(result, indent=1) + "\n")
    summary = {k: v for k, v in result.items() if k != "per_surrogate"}
    if args.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key:36s} {value}")


if __name__ == "__main__":
    main()
