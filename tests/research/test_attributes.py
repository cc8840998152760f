"""The attribute-inference attacker against the target policy, with its positive control."""

import numpy as np

from deid_client.firewall.config import compose_firewall
from research.attributes import PolicyAttacker, majority, population, score


def policy_scores(min_change: int) -> dict[str, dict]:
    template = compose_firewall().prompts
    prior = population(3000, seed=1)
    attacker = PolicyAttacker.simulated(template, prior, min_change=min_change, draws=6000, seed=1)
    patients = population(3000, seed=2)
    rng = np.random.default_rng(3)
    targets = [template.draw_targets(p, 1, rng, min_change=min_change)[0] for p in patients]
    return {name: score(attacker.predict(targets, name), [p[name] for p in patients], majority(prior, name))
            for name in ("sex", "skin_type")}


def test_targets_drawn_blind_tell_nothing_and_min_change_tells_the_skin_type():
    blind = policy_scores(0)
    assert all(s["at_chance"] for s in blind.values()), blind
    kept = policy_scores(3)  # the positive control: a policy that reads the patient leaks
    assert kept["skin_type"]["ci95"][0] > 2 * kept["skin_type"]["chance"], kept
    assert not kept["sex"]["at_chance"], kept
