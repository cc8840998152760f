"""Can a released surrogate tell the patient's sex and skin type? (docs/privacy_attackers.md)

    python benchmarks/attribute_inference.py --json
    python benchmarks/attribute_inference.py --json min_change=3     # firewall overrides

The site knows its patients' attributes (as with an ``attributes.csv``); the firewall runs
as a site runs it (``Firewall``: one target per photo, the identity gate, its retries) on
``--patients`` phantom patients, one photo each. Only released results count. The
attackers (``research.attributes``):

- ``prompt``: the manifest's target prompt, read by an attacker who knows the policy and
  the population (Bayes-optimal for the policy). ``policy`` is the same attacker on
  ``--draws`` targets drawn by the policy alone (no photos, no gate): the policy's own leak,
  measured on many people;
- ``released``: the target prompt, read by an attacker who learnt the posterior from what
  the firewall released for ``--aux`` other phantoms (target, their attributes): it also
  sees what the identity gate's retries add;
- ``image``: a CNN trained on the surrogates this firewall released from ``--aux`` other
  phantoms, labelled with their attributes, shown the test surrogates.

Chance is always answering the population's most common value; ``at_chance`` says whether
chance lies in the binomial 95% interval of the attacker's accuracy.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

import _repo  # noqa: F401  (research/ from the checkout)
from deid_client.editing.backends import load_backend
from deid_client.firewall import Firewall
from deid_client.firewall.config import compose_firewall
from deid_client.phantom.language import attributes_of
from research.attributes import INFERRED, ImageAttacker, PolicyAttacker, majority, population, score
from research.reid import photo_sessions

TEST_SEED, AUX_SEED, PRIOR_SEED = 2027, 3131, 77
ATTACKS = ("prompt", "released", "image")  # shown the test patients' released results


def released(firewall: Firewall, n: int, seed: int) -> tuple[list, list[dict]]:
    """The firewall's released results for ``n`` phantom patients (one photo each), and
    those patients' attributes."""
    sessions, people = photo_sessions(n, 1, size=64, seed=seed)
    known = [attributes_of(p) for p in people]
    results = firewall([s[0].image for s in sessions], known, batch_size=None)
    kept = [i for i, r in enumerate(results) if r.released]
    return [results[i] for i in kept], [known[i] for i in kept]


def measure(overrides: list[str], n_patients: int, n_aux: int, draws: int, epochs: int) -> dict:
    cfg = compose_firewall(overrides)
    firewall = Firewall(cfg, load_backend(cfg.model))
    prior = population(5000, seed=PRIOR_SEED)
    started = time.perf_counter()
    policy = PolicyAttacker.simulated(cfg.prompts, prior, min_change=cfg.min_change, draws=draws,
                                      seed=PRIOR_SEED)
    # the policy's own leak, on people the attacker's simulation never saw
    fresh = population(draws, seed=PRIOR_SEED + 1)
    rng = np.random.default_rng(PRIOR_SEED + 2)
    fresh_targets = [cfg.prompts.draw_targets(p, 1, rng, min_change=cfg.min_change)[0] for p in fresh]
    print(f"firewall on {n_aux} attacker phantoms and {n_patients} patients", file=sys.stderr)
    aux, aux_people = released(firewall, n_aux, AUX_SEED)
    test, test_people = released(firewall, n_patients, TEST_SEED)
    firewall_seconds = time.perf_counter() - started
    surrogates = np.stack([r.surrogate for r in test])
    learned = PolicyAttacker(cfg.prompts, [(r.target, p) for r, p in zip(aux, aux_people)], by_attribute=True)
    out: dict = {}
    for name in INFERRED:
        chance_value = majority(prior, name)
        truth = [p[name] for p in test_people]
        image = ImageAttacker(np.stack([r.surrogate for r in aux]), aux_people, name, epochs=epochs,
                              seed=AUX_SEED)
        targets = [r.target for r in test]
        rows = {"prompt": score(policy.predict(targets, name), truth, chance_value),
                "released": score(learned.predict(targets, name), truth, chance_value),
                "image": score(image.predict(surrogates), truth, chance_value),
                "policy": score(policy.predict(fresh_targets, name), [p[name] for p in fresh],
                                chance_value)}
        worst = max(ATTACKS, key=lambda k: rows[k]["accuracy"])
        named = [policy.target_attributes(t)[name] for t in targets]
        differs = np.mean([a != b for a, b in zip(named, truth, strict=True)])
        out[name] = {**rows, "target_differs": round(float(differs), 4), "worst_attacker": worst,
                     "worst_accuracy": rows[worst]["accuracy"],
                     "chance": rows[worst]["chance"],
                     "at_chance": all(rows[k]["at_chance"] for k in (*ATTACKS, "policy"))}
    return {"attributes": out, "min_change": cfg.min_change, "privacy": cfg.privacy,
            "patients_released": len(test), "patients": n_patients, "aux_released": len(aux),
            "aux": n_aux, "policy_draws": draws, "overrides": overrides,
            "seconds": round(time.perf_counter() - started, 1),
            "firewall_seconds": round(firewall_seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=200, help="test patients, one photo each")
    parser.add_argument("--aux", type=int, default=300, help="phantoms the image attacker learns from")
    parser.add_argument("--draws", type=int, default=20000, help="policy simulations")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("overrides", nargs="*", help="firewall config overrides, e.g. min_change=3")
    args = parser.parse_args()
    result = measure(args.overrides, args.patients, args.aux, args.draws, args.epochs)
    if args.json:
        print(json.dumps(result))
        return
    for name, rows in result["attributes"].items():
        for channel in (*ATTACKS, "policy"):
            r = rows[channel]
            print(f"{name:10s} {channel:7s} accuracy {r['accuracy']:.3f}  chance {r['chance']:.3f}  "
                  f"95% CI {r['ci95']}  n {r['n']}  {'at chance' if r['at_chance'] else 'LEAKS'}")
    print(f"seconds {result['seconds']}")


if __name__ == "__main__":
    main()
