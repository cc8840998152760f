"""The phantom world's prompt language: the words the phantom model was trained on, which
the firewall's phantom preset uses too (``conf/prompts/phantom.yaml`` in this package, on
the firewall's config search path: one home, below both).

>>> describe(sex="female", skin_type=2, hair_colour="blond", erythema=True)
'a photo of a woman with blond hair and fair skin, with facial erythema'
>>> describe(sex="male", erythema=False)
'a photo of a man, with clear, healthy skin'
"""

from __future__ import annotations

import functools
import importlib.resources

import numpy as np
from omegaconf import OmegaConf

from deid_client.editing.prompts import PromptTemplate

from .identity import Identity

# also, read from template() on first use: TEMPLATE, SEX_WORDS, SKIN_WORDS, HAIR_WORDS, ERYTHEMA, HEALTHY
__all__ = ["template", "describe", "prompt_for", "random_prompt_for", "vocabulary", "attributes_of"]

#: The language's file, a Hydra config group option (``prompts: phantom``).
CONF = "conf"


@functools.cache
def template() -> PromptTemplate:
    """The phantom prompt language, as the firewall reads it (read on first use)."""
    text = (importlib.resources.files(__package__) / CONF / "prompts" / "phantom.yaml").read_text()
    return PromptTemplate(**OmegaConf.to_container(OmegaConf.create(text)))


def __getattr__(name: str):
    # the language's words, from template() on first use: no file is read at import
    words = {"TEMPLATE": lambda t: t, "SEX_WORDS": lambda t: t.attributes["sex"],
             "SKIN_WORDS": lambda t: {int(k): v for k, v in t.attributes["skin_type"].items()},
             "HAIR_WORDS": lambda t: t.attributes["hair_colour"],
             "ERYTHEMA": lambda t: t.condition, "HEALTHY": lambda t: t.healthy}
    if name in words:
        return words[name](template())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def describe(*, sex: str | None = None, skin_type: int | None = None,
             hair_colour: str | None = None, erythema: bool = True) -> str:
    """A prompt naming the given attributes (any may be left out): the template's
    ``person`` when all are known, else the same words without the unknown ones."""
    t = template()
    known = {"sex": sex, "skin_type": skin_type and str(skin_type), "hair_colour": hair_colour}
    if all(known.values()):
        return t.describe(known, healthy=not erythema)
    subject = f"a photo of a {t.attributes['sex'][sex]}" if sex else "a photo of a person"
    parts = []
    if hair_colour:
        parts.append(f"{t.attributes['hair_colour'][hair_colour]} hair")
    if skin_type:
        parts.append(f"{t.attributes['skin_type'][str(skin_type)]} skin")
    features = f" with {' and '.join(parts)}" if parts else ""
    return f"{subject}{features}, {t.healthy if not erythema else t.condition}"


def prompt_for(identity: Identity, *, erythema: bool = True) -> str:
    """The full prompt of a phantom person."""
    return describe(sex=identity.sex, skin_type=identity.skin_type,
                    hair_colour=identity.hair_colour, erythema=erythema)


def random_prompt_for(identity: Identity, erythema: bool, rng: np.random.Generator,
                      p_leave_out: float = 0.2) -> str:
    """A training caption: the full prompt with each attribute left out with ``p_leave_out``,
    so shorter prompts ("a photo of a woman, with facial erythema") work too."""
    keep = rng.uniform(size=3) >= p_leave_out
    return describe(sex=identity.sex if keep[0] else None,
                    skin_type=identity.skin_type if keep[1] else None,
                    hair_colour=identity.hair_colour if keep[2] else None, erythema=erythema)


def vocabulary() -> list[str]:
    """Every word (and punctuation mark) a prompt can contain: the template's, with its
    ``{placeholders}`` left out."""
    t = template()
    frame = (t.patient + " " + t.person).format(condition="", **{name: "" for name in t.attributes})
    texts = [t.condition, t.healthy, frame, *(w for words in t.attributes.values() for w in words.values())]
    words = {w for text in texts for w in text.replace(",", " , ").split()}
    return sorted(words)


def attributes_of(identity: Identity) -> dict[str, str]:
    """A phantom person's attributes as :func:`template` names them
    (``template().describe`` of them is :func:`prompt_for`)."""
    return {"sex": identity.sex, "skin_type": str(identity.skin_type),
            "hair_colour": identity.hair_colour}
