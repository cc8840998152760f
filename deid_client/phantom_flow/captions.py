"""The phantom model's captions: sex class, hair colour, skin type, condition.

The words are the firewall's phantom prompt language, ``conf/prompts/phantom.yaml``
(their one home, :data:`TEMPLATE`); the model was trained on captions written from them.

>>> describe(sex="female", skin_type=2, hair_colour="blond", erythema=True)
'a photo of a woman with blond hair and fair skin, with facial erythema'
>>> describe(sex="male", erythema=False)
'a photo of a man, with clear, healthy skin'
"""

from __future__ import annotations

import importlib.resources

import numpy as np
from omegaconf import OmegaConf

from deid_client.firewall.prompts import PromptTemplate
from deid_client.phantom import Identity

__all__ = ["TEMPLATE", "SEX_WORDS", "SKIN_WORDS", "HAIR_WORDS", "ERYTHEMA", "HEALTHY", "describe",
           "prompt_for", "random_prompt_for", "vocabulary", "attributes_of"]

_YAML = importlib.resources.files("deid_client.firewall") / "conf" / "prompts" / "phantom.yaml"
#: The phantom prompt language, as the firewall reads it.
TEMPLATE = PromptTemplate(**OmegaConf.to_container(OmegaConf.create(_YAML.read_text())))
SEX_WORDS = TEMPLATE.attributes["sex"]
#: Fitzpatrick skin types I..VI in words.
SKIN_WORDS = {int(k): v for k, v in TEMPLATE.attributes["skin_type"].items()}
HAIR_WORDS = TEMPLATE.attributes["hair_colour"]
ERYTHEMA = TEMPLATE.condition
HEALTHY = TEMPLATE.healthy


def describe(*, sex: str | None = None, skin_type: int | None = None,
             hair_colour: str | None = None, erythema: bool = True) -> str:
    """A prompt naming the given attributes (any may be left out)."""
    subject = f"a photo of a {SEX_WORDS[sex]}" if sex else "a photo of a person"
    parts = []
    if hair_colour:
        parts.append(f"{HAIR_WORDS[hair_colour]} hair")
    if skin_type:
        parts.append(f"{SKIN_WORDS[skin_type]} skin")
    features = f" with {' and '.join(parts)}" if parts else ""
    return f"{subject}{features}, {ERYTHEMA if erythema else HEALTHY}"


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
    frame = (TEMPLATE.patient + " " + TEMPLATE.person).format(
        condition="", **{name: "" for name in TEMPLATE.attributes})
    texts = [ERYTHEMA, HEALTHY, frame, *SEX_WORDS.values(), *SKIN_WORDS.values(), *HAIR_WORDS.values()]
    words = {w for text in texts for w in text.replace(",", " , ").split()}
    return sorted(words)


def attributes_of(identity: Identity) -> dict[str, str]:
    """A phantom person's attributes as :data:`TEMPLATE` names them
    (``TEMPLATE.describe`` of them is :func:`prompt_for`)."""
    return {"sex": identity.sex, "skin_type": str(identity.skin_type),
            "hair_colour": identity.hair_colour}
