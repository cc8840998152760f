"""FLUX.1 backend (dev: guidance-distilled; schnell): both sides in one batch of 2."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from deid_client.editing.schedules import flux_sigmas
from deid_client.editing.backends.base import DiffusersBackend, EditSettings, stack_prompts

__all__ = ["FluxBackend"]


@dataclass(frozen=True)
class _Prompt:
    embeds: torch.Tensor  # (1, L, joint_dim) T5
    pooled: torch.Tensor  # (1, pooled_dim) CLIP
    text_ids: torch.Tensor  # (L, 3)


class FluxBackend(DiffusersBackend):
    """FlowEdit with ``FluxPipeline`` components, in FLUX's packed latent space.

    FLUX.1-dev has no classifier-free guidance: each side is one call with its
    own distilled ``guidance`` value (gamma_src, gamma_tgt), and the two sides
    share one call: a batch of 2 per image. FLUX.1-schnell has no guidance input at all.
    The transformer gets t in 0..1 (it multiplies by 1000 itself).
    """

    family = "flux"

    @torch.no_grad()
    def _encode_prompt(self, text: str) -> _Prompt:
        embeds, pooled, text_ids = self.pipe.encode_prompt(
            prompt=text, prompt_2=text, device=self.execution_device, num_images_per_prompt=1,
            max_sequence_length=self.max_sequence_length)
        return _Prompt(embeds.to(self.dtype), pooled.to(self.dtype), text_ids)

    def _to_model_space(self, latent: torch.Tensor) -> torch.Tensor:
        return self.pipe._pack_latents(latent, *latent.shape)

    def _from_model_space(self, z: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.pipe._unpack_latents(z, size[0], size[1], self.pipe.vae_scale_factor)

    def sigmas(self, steps: int, x: torch.Tensor) -> torch.Tensor:
        return flux_sigmas(steps, x.shape[1], self.pipe.scheduler)

    def velocities(self, settings: Sequence[EditSettings], size: tuple[int, int]):
        settings = list(settings)
        src = [self.embedding(s.source_prompt) for s in settings]
        tgt = [self.embedding(s.target_prompt) for s in settings]
        g_src, g_tgt = [s.gamma_src for s in settings], [s.gamma_tgt for s in settings]
        transformer = self.pipe.transformer
        distilled = bool(transformer.config.guidance_embeds)
        factor = 2 * self.pipe.vae_scale_factor  # latent pixels, then 2 x 2 packing
        image_ids = self.pipe._prepare_latent_image_ids(
            1, size[0] // factor, size[1] // factor, self.execution_device, self.dtype)
        text_ids = src[0].text_ids  # every prompt is padded to max_sequence_length
        side_src, side_tgt, both = stack_prompts(src), stack_prompts(tgt), stack_prompts(src + tgt)

        def run(latents, conditioning, guidance, t):
            embeds, pooled = conditioning
            timestep = torch.full((latents.shape[0],), t, device=latents.device, dtype=latents.dtype)
            g = (torch.tensor(guidance, device=latents.device, dtype=torch.float32)
                 if distilled else None)
            return transformer(hidden_states=latents, timestep=timestep, guidance=g,
                               pooled_projections=pooled, encoder_hidden_states=embeds,
                               txt_ids=text_ids, img_ids=image_ids, return_dict=False)[0]

        def single(conditioning, guidance):
            @torch.no_grad()
            def v(z, t):
                return run(z, conditioning, guidance, t)
            return v

        @torch.no_grad()
        def v_pair(z_src, z_tgt, t):
            return run(torch.cat([z_src, z_tgt]), both, g_src + g_tgt, t).chunk(2)

        return single(side_src, g_src), single(side_tgt, g_tgt), v_pair

