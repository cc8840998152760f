"""Prompt templates of the firewall: how a patient, a target person and a healthy twin are
described to the model (``conf/prompts/``).

A template knows nothing of any model or world: the phantom model's words are one preset
(``conf/prompts/phantom.yaml``), free-text photo prompts for SD3 / FLUX another. Attributes
are plain strings (``{"sex": "female", "skin_type": "2"}``).

>>> t = PromptTemplate(patient="a photo of a person, {condition}",
...                    person="a photo of a {sex}, {condition}",
...                    condition="with erythema", healthy="with clear skin",
...                    attributes={"sex": {"female": "woman", "male": "man"}},
...                    changes={"sex": "categorical"})
>>> t.describe({"sex": "male"})
'a photo of a man, with erythema'
>>> t.healthy_prompt(t.describe(None))
'a photo of a person, with clear skin'
>>> t.draw_targets({"sex": "male"}, 1, np.random.default_rng(0), min_change=1)
['a photo of a woman, with erythema']
>>> draw = lambda patient: t.draw_targets(patient, 2, np.random.default_rng(0))
>>> draw({"sex": "male"}) == draw({"sex": "female"}) == draw(None)  # min_change 0: blind to the patient
True
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

__all__ = ["PromptTemplate", "Attributes"]

#: What is known of a patient: attribute name -> value (a key of ``PromptTemplate.attributes``).
Attributes = Mapping[str, str]


@dataclass(frozen=True)
class PromptTemplate:
    """``patient``: a patient nothing (or not everything) is known of; ``person``: someone
    whose every attribute is known (``{name}`` placeholders, plus ``{condition}``);
    ``condition`` / ``healthy``: the phrases the twin edit swaps; ``attributes``: name ->
    {value: words}; ``exclude``: combinations never drawn (name -> values, all must match);
    ``changes``: what ``min_change`` counts per attribute, ``ordinal`` (positions along the
    values' order) or ``categorical`` (1 for any change)."""

    patient: str
    person: str
    condition: str
    healthy: str
    attributes: dict[str, dict[str, str]]
    exclude: list[dict[str, list[str]]] = field(default_factory=list)
    changes: dict[str, Literal["ordinal", "categorical"]] = field(default_factory=dict)

    def __post_init__(self):
        names = {f for _, f, _, _ in string.Formatter().parse(self.person) if f} - {"condition"}
        if names != set(self.attributes):
            raise ValueError(f"prompts: 'person' names {sorted(names)} but the attributes are "
                             f"{sorted(self.attributes)}")
        for name, kind in self.changes.items():
            if name not in self.attributes or kind not in ("ordinal", "categorical"):
                raise ValueError(f"prompts: changes.{name}={kind!r}: needs an attribute and "
                                 f"'ordinal' or 'categorical'")
        if self.condition not in self.patient.format(condition=self.condition):
            raise ValueError("prompts: 'patient' must contain {condition}")

    def describe(self, attributes: Attributes | None, *, healthy: bool = False) -> str:
        """The prompt of someone with ``attributes`` (all of them known: ``person``;
        otherwise ``patient``), with the condition or, ``healthy=True``, without."""
        phrase = self.healthy if healthy else self.condition
        known = self.check(attributes)
        if known and set(known) == set(self.attributes):
            return self.person.format(condition=phrase,
                                      **{k: self.attributes[k][v] for k, v in known.items()})
        return self.patient.format(condition=phrase)

    def healthy_prompt(self, prompt: str) -> str:
        """``prompt`` with the condition phrase swapped for the healthy one."""
        if self.condition not in prompt:
            raise ValueError(f"prompt {prompt!r} does not say {self.condition!r}: "
                             f"give the twin prompt explicitly")
        return prompt.replace(self.condition, self.healthy)

    def check(self, attributes: Attributes | None) -> dict[str, str]:
        """``attributes`` as strings, each a known value (unknown ones are a ``ValueError``)."""
        known = {k: str(v) for k, v in (attributes or {}).items() if v not in (None, "")}
        for name, value in known.items():
            if name not in self.attributes:
                raise ValueError(f"unknown attribute {name!r} (known: {sorted(self.attributes)})")
            if value not in self.attributes[name]:
                raise ValueError(f"attribute {name}={value!r} is not one of "
                                 f"{sorted(self.attributes[name])}")
        return known

    def distance(self, a: Attributes, b: Attributes) -> int:
        """Steps between two people, as ``min_change`` counts them (attributes known of
        both only)."""
        steps = 0
        for name, kind in self.changes.items():
            if name in a and name in b:
                order = list(self.attributes[name])
                steps += (abs(order.index(a[name]) - order.index(b[name])) if kind == "ordinal"
                          else int(a[name] != b[name]))
        return steps

    def draw_targets(self, source: Attributes | None, count: int, rng: np.random.Generator, *,
                     min_change: int = 0) -> list[str]:
        """``count`` different target prompts, drawn uniformly over the vocabulary outside
        ``exclude``; the first attribute alternates between targets (in a random order),
        so that several targets of one photo differ in it.

        ``min_change`` > 0 keeps each target at least that many steps from the patient
        ``source`` (or as far as the attributes known of them allow). That makes the
        target depend on the patient, so a released surrogate and its prompt then tell
        something of the patient's attributes (docs/privacy_attackers.md). At 0 the draw
        never reads ``source``: the same ``rng`` gives the same targets for anyone.
        """
        source = self.check(source)
        people = self.people()
        if min_change > 0:
            # as far as what is known allows: nothing known, nothing to keep away from
            need = min(min_change, max(self.distance(source, p) for p in people))
            people = [p for p in people if self.distance(source, p) >= need]
        first = next(iter(self.attributes))
        values = list(rng.permutation(list(self.attributes[first])))
        prompts: list[str] = []
        for i in range(count):
            pool = [p for p in people if p[first] == values[i % len(values)]
                    and self.describe(p) not in prompts] or \
                   [p for p in people if self.describe(p) not in prompts]
            if not pool:
                raise ValueError(f"found only {len(prompts)} of {count} distinct target prompts at "
                                 f"least {min_change} steps from the patient; ask for fewer or a "
                                 f"smaller min_change")
            prompts.append(self.describe(pool[int(rng.integers(len(pool)))]))
        return prompts

    def people(self) -> list[dict[str, str]]:
        """Everyone the vocabulary can describe (every combination outside ``exclude``)."""
        people: list[dict[str, str]] = [{}]
        for name, values in self.attributes.items():
            people = [p | {name: v} for p in people for v in values]
        return [p for p in people
                if not any(all(p[k] in vs for k, vs in rule.items()) for rule in self.exclude)]
