"""The firewall's inner steps on their own, for research baselines: the patients' photos
healed as the firewall heals them on the way, and the gate's verdict on one draw. Neither
is ever released, so neither belongs to the product's ``Firewall``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deid_client.editing.prompts import Attributes
from deid_client.editing.seeds import image_key
from deid_client.firewall import Firewall, Result
from deid_client.firewall.gate import Verdict, judge

__all__ = ["heal", "gate_verdict"]


def heal(firewall: Firewall, images: Sequence[np.ndarray],
         attributes: Sequence[Attributes | None] | None = None, *,
         keys: Sequence[str] | None = None) -> list[np.ndarray]:
    """The patients' own photos healed by the twin edit, as ``firewall`` heals them on the
    way (``twin_from="patient"``), with the same noise."""
    images = list(images)
    attributes = list(attributes) if attributes is not None else [None] * len(images)
    keys = list(keys) if keys is not None else [image_key(im) for im in images]
    edits = [firewall.twin_edit(firewall.cfg.prompts.describe(a)) for a in attributes]
    return firewall.backend.edit_batch(images, edits, keys=[f"{k}:twin" for k in keys])


def gate_verdict(firewall: Firewall, image: np.ndarray, result: Result) -> Verdict:
    """The identity gate's verdict on one result of ``image`` (one draw, no retries)."""
    return judge(image, result.surrogate, result.twin, firewall.cfg.gate,
                      resolution=firewall.working_side(image))
