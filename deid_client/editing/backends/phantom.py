"""The phantom rectified-flow model as a FlowEdit backend (pixel space, 64 px).

The model is an SD3-style MMDiT, so the guided velocities are SD3's; only the
prompt encoder and the image <-> model-space conversion differ (no VAE).
"""

from __future__ import annotations

import numpy as np
import torch

from deid_client.phantom.pipeline import IMAGE_SIZE, to_image, to_model_space
from deid_client.editing.backends.sd3 import SD3Backend, _Prompt
from deid_client.io.images import resize

__all__ = ["PhantomBackend"]


class PhantomBackend(SD3Backend):
    """FlowEdit with the shipped ``PhantomFlowPipeline`` (its settings:
    ``deid_client/firewall/conf/flowedit/phantom.yaml``).

    Images are worked on at 64 px at most (the model's size) and returned at
    their input size.
    """

    family = "phantom"

    def __init__(self, pipe, *, device=None, dtype=None, cpu_offload: bool = False,
                 max_sequence_length: int = 256):
        # A 3.5M-parameter model: float32 everywhere (bfloat16 would only lose precision).
        super().__init__(pipe, device=device, dtype=dtype or torch.float32, cpu_offload=cpu_offload,
                         max_sequence_length=max_sequence_length)

    @torch.no_grad()
    def _encode_prompt(self, text: str) -> _Prompt:
        embeds, pooled = self.pipe.encode_prompt(text)
        return _Prompt(embeds.to(self.dtype), pooled.to(self.dtype))

    @torch.no_grad()
    def encode_images(self, images, size: tuple[int, int]) -> torch.Tensor:
        if max(size) > IMAGE_SIZE:
            raise ValueError(f"the phantom model works at {IMAGE_SIZE} px at most; "
                             f"set max_side <= {IMAGE_SIZE} (asked for {size[1]}x{size[0]})")
        images = [im if im.shape[:2] == size else resize(im, size, method="lanczos") for im in images]
        return to_model_space(np.stack(images)).to(self.execution_device, self.dtype)

    @torch.no_grad()
    def decode_latents(self, latent: torch.Tensor) -> list[np.ndarray]:
        return list(to_image(latent))
