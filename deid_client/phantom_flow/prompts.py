"""The phantom model's prompt language: sex class, hair colour, skin type, condition.

>>> describe(sex="female", skin_type=2, hair_colour="blond", erythema=True)
'a photo of a woman with blond hair and fair skin, with facial erythema'
>>> describe(sex="male", erythema=False)
'a photo of a man, with clear, healthy skin'
"""

from __future__ import annotations

import numpy as np

from ..phantom import Identity

__all__ = ["SEX_WORDS", "SKIN_WORDS", "HAIR_WORDS", "ERYTHEMA", "HEALTHY", "describe",
           "prompt_for", "random_prompt_for", "healthy_prompt", "vocabulary", "attributes_of"]

SEX_WORDS = {"female": "woman", "male": "man"}
#: Fitzpatrick skin types I..VI in words.
SKIN_WORDS = {1: "very fair", 2: "fair", 3: "medium", 4: "olive", 5: "brown", 6: "dark"}
HAIR_WORDS = {"black": "black", "dark_brown": "dark brown", "brown": "brown", "auburn": "auburn",
              "blond": "blond", "grey": "grey"}
ERYTHEMA = "with facial erythema"
HEALTHY = "with clear, healthy skin"


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


def healthy_prompt(prompt: str) -> str:
    """The prompt of the healthy twin: the condition phrase swapped for healthy skin.

    >>> healthy_prompt("a photo of a man, with facial erythema")
    'a photo of a man, with clear, healthy skin'
    """
    if ERYTHEMA not in prompt:
        raise ValueError(f"prompt {prompt!r} does not say {ERYTHEMA!r}: give the twin prompt explicitly")
    return prompt.replace(ERYTHEMA, HEALTHY)


def vocabulary() -> list[str]:
    """Every word (and punctuation mark) a prompt can contain."""
    texts = [ERYTHEMA, HEALTHY, "a photo of a person with and skin hair",
             *SEX_WORDS.values(), *SKIN_WORDS.values(), *HAIR_WORDS.values()]
    words = {w for text in texts for w in text.replace(",", " , ").split()}
    return sorted(words)


def attributes_of(identity: Identity) -> dict[str, str]:
    """A phantom person's attributes in the words of ``conf/prompts/phantom.yaml``
    (``deid_client.prompts.PromptTemplate.describe`` of them is :func:`prompt_for`)."""
    return {"sex": identity.sex, "skin_type": str(identity.skin_type),
            "hair_colour": identity.hair_colour}
