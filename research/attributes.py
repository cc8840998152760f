"""Attribute inference: what a released surrogate says about its patient's attributes.

Where a site knows its patients' attributes (``attributes.csv``, or the phantom world), the
firewall draws each target prompt knowing them. An attacker who holds a released surrogate,
its twin and the manifest's target prompt, and knows the firewall's policy, tries to read
the *patient's* sex and skin type back. Two channels, each with the strongest attacker
built here for it:

- ``prompt`` (:class:`PolicyAttacker`): the target prompt names the target's attributes.
  The attacker knows the population and the policy (``PromptTemplate.draw_targets`` with
  the config's ``min_change``), simulates it, and answers the patient value with the
  highest posterior given the target: Bayes-optimal for the policy. The same attacker
  counting what the firewall released for people it knows also sees what the identity
  gate's choices add.
- ``image`` (:class:`ImageAttacker`): the surrogate's pixels. A CNN
  (:func:`research.reid.train_reid`) trained on what this firewall released from other
  people's photos, labelled with those people's attributes, so it learns whatever of them
  survives: through the target policy or through the photo itself (pose, lesion, light).

Chance is always answering the population's most common value; :func:`score` says
whether an attacker's accuracy is within the binomial 95% interval of it.

>>> from deid_client.firewall.config import compose_firewall
>>> template = compose_firewall().prompts
>>> prior = population(2000, seed=0)
>>> attacker = PolicyAttacker.simulated(template, prior, min_change=0, draws=2000, seed=0)
>>> target = template.describe({"sex": "male", "skin_type": "5", "hair_colour": "black"})
>>> attacker.predict([target], "sex")[0] in ("female", "male")
True
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

import numpy as np
from scipy.stats import binomtest

from deid_client.editing.prompts import Attributes, PromptTemplate
from deid_client.phantom import sample_identity
from deid_client.phantom.language import attributes_of
from research.reid import identify, train_reid

__all__ = ["population", "majority", "PolicyAttacker", "ImageAttacker", "score", "INFERRED"]

#: The attributes an attacker tries to read back (the phantom prompts' ``changes``).
INFERRED = ("sex", "skin_type")


def population(n: int, *, seed: int = 0) -> list[dict[str, str]]:
    """The attributes of ``n`` people drawn as the phantom world draws its patients."""
    rng = np.random.default_rng([seed, 0xA77])
    return [attributes_of(sample_identity(rng)) for _ in range(n)]


def majority(people: Sequence[Attributes], attribute: str) -> str:
    """The most common value of ``attribute``: chance's answer."""
    return Counter(p[attribute] for p in people).most_common(1)[0][0]


class PolicyAttacker:
    """Reads the patient's attributes from a target prompt: the patient value with the
    highest posterior given the target, counted over ``pairs`` of (target prompt, patient
    attributes) the attacker has seen drawn: simulated from the policy
    (:meth:`simulated`), or what the firewall released for people the attacker knows
    (which also catches whatever the identity gate's choices add). ``by_attribute``: key the
    posterior on the target's value of the attribute asked for, not the whole prompt (fewer
    cells, for few pairs)."""

    name = "prompt"

    def __init__(self, template: PromptTemplate, pairs: Iterable[tuple[str, Attributes]], *,
                 by_attribute: bool = False):
        self.template, self.by_attribute = template, by_attribute
        self._people = {template.describe(p): p for p in template.people()}
        self.counts: dict[tuple, Counter] = defaultdict(Counter)
        seen: list[Attributes] = []
        for target, patient in pairs:
            seen.append(patient)
            for name, value in patient.items():
                self.counts[self._key(target, name)][value] += 1
        self.fallback = {name: majority(seen, name) for name in seen[0]}

    @classmethod
    def simulated(cls, template: PromptTemplate, prior: Sequence[Attributes], *, min_change: int,
                  draws: int = 20000, seed: int = 0) -> PolicyAttacker:
        """The policy (``draw_targets`` with ``min_change``, one target per photo as the
        firewall draws) run ``draws`` times over the ``prior`` population."""
        rng = np.random.default_rng([seed, 0x9011])
        pairs = []
        for i in range(draws):
            patient = prior[i % len(prior)]
            pairs.append((template.draw_targets(patient, 1, rng, min_change=min_change)[0], patient))
        return cls(template, pairs)

    def target_attributes(self, target: str) -> Attributes:
        """The attributes a target prompt names."""
        return self._people[target]

    def _key(self, target: str, attribute: str) -> tuple:
        return (attribute, self._people[target][attribute] if self.by_attribute else target)

    def predict(self, targets: Sequence[str], attribute: str) -> list[str]:
        """The patient value with the highest posterior for each target prompt (a target
        never seen: the most common value)."""
        out = []
        for target in targets:
            seen = self.counts.get(self._key(target, attribute))
            out.append(seen.most_common(1)[0][0] if seen else self.fallback[attribute])
        return out


class ImageAttacker:
    """Reads one attribute of the patient from a released surrogate: a CNN trained on
    surrogates of other people (``images``) labelled with those people's attributes."""

    name = "image"

    def __init__(self, images: np.ndarray, people: Sequence[Attributes], attribute: str, *,
                 epochs: int = 60, seed: int = 0):
        self.values = sorted({p[attribute] for p in people})
        labels = np.array([self.values.index(p[attribute]) for p in people])
        self.model = train_reid(images, labels, epochs=epochs, seed=seed)

    def predict(self, images: np.ndarray) -> list[str]:
        return [self.values[i] for i in identify(self.model, images)]


def score(predicted: Sequence[str], truth: Sequence[str], chance_value: str) -> dict:
    """Accuracy of ``predicted`` against ``truth``, chance (always ``chance_value``) on the
    same people, and the binomial 95% interval of the attacker's accuracy: the attacker is
    ``at_chance`` when that interval contains chance.

    >>> score(["a", "b", "a", "a"], ["a", "a", "b", "a"], "a")["accuracy"]
    0.5
    """
    truth = list(truth)
    n = len(truth)
    correct = sum(p == t for p, t in zip(predicted, truth, strict=True))
    chance = sum(t == chance_value for t in truth) / n
    interval = binomtest(correct, n).proportion_ci(0.95)  # Clopper-Pearson
    return {"accuracy": correct / n, "chance": chance, "n": n,
            "ci95": [round(interval.low, 4), round(interval.high, 4)],
            "at_chance": bool(interval.low <= chance <= interval.high)}
