"""What every diffusers FlowEdit backend shares: settings, image <-> latent, prompts, ``edit``."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from ..flowedit import Velocity, VelocityPair, flowedit
from ..seeds import image_generator, image_key

__all__ = ["EditSettings", "DiffusersBackend", "working_size"]


@dataclass(frozen=True)
class EditSettings:
    """One FlowEdit edit: prompts, guidance per side, schedule window, seed.

    ``max_side`` caps the longest side the model works at (the result is
    returned at the input's size); sides are rounded to multiples of 16.
    """

    source_prompt: str
    target_prompt: str
    steps: int
    n_max: int
    gamma_src: float
    gamma_tgt: float
    n_min: int = 0
    n_avg: int = 1
    seed: int = 0
    max_side: int = 1024

    def with_overrides(self, **changes: Any) -> EditSettings:
        """A copy with every non-None change applied."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def working_size(height: int, width: int, max_side: int, multiple: int = 16) -> tuple[int, int]:
    """(height, width) scaled to fit ``max_side`` and rounded to multiples of ``multiple``.

    >>> working_size(768, 1024, 1024), working_size(3000, 4000, 1024), working_size(70, 90, 1024)
    ((768, 1024), (768, 1024), (64, 96))
    """
    scale = min(1.0, max_side / max(height, width))
    return tuple(max(multiple, int(round(side * scale / multiple)) * multiple)
                 for side in (height, width))


class DiffusersBackend:
    """FlowEdit on a diffusers pipeline. Subclasses supply the velocities and schedule.

    Parameters
    ----------
    pipe : DiffusionPipeline
        The loaded pipeline (its VAE, transformer, text encoders, scheduler).
    device, dtype : optional
        Where to run; default CUDA in bfloat16 when available, else CPU in float32.
    cpu_offload : bool
        Keep models on the CPU and move each to the GPU only while it runs.
    max_sequence_length : int
        T5 tokens per prompt.
    """

    family: ClassVar[str]
    defaults: ClassVar[dict[str, Any]]

    def __init__(self, pipe, *, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None, cpu_offload: bool = False,
                 max_sequence_length: int = 256):
        self.pipe = pipe
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.max_sequence_length = max_sequence_length
        if pipe.dtype != self.dtype:  # best set at load time (torch_dtype); cast otherwise
            pipe.to(dtype=self.dtype)
        if cpu_offload:
            pipe.enable_model_cpu_offload(device=self.device)
        else:
            pipe.to(self.device)
        self._prompts: dict[str, Any] = {}
        self._text_encoders_freed = False

    # -- settings -------------------------------------------------------------

    def settings(self, source_prompt: str, target_prompt: str, **overrides: Any) -> EditSettings:
        """The published defaults of this model family, with ``overrides`` applied."""
        return EditSettings(source_prompt, target_prompt, **self.defaults).with_overrides(**overrides)

    # -- prompts --------------------------------------------------------------

    def prompt(self, text: str):
        """Encoded prompt, computed once per backend (prompts repeat across a cohort)."""
        if text not in self._prompts:
            if self._text_encoders_freed:
                raise ValueError(f"text encoders were freed; prompt {text!r} was not encoded before")
            self._prompts[text] = self._encode_prompt(text)
        return self._prompts[text]

    def free_text_encoders(self, *keep_prompts: str) -> None:
        """Encode ``keep_prompts`` (if not yet), then drop the text encoders to save memory."""
        for text in keep_prompts:
            self.prompt(text)
        for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
            if getattr(self.pipe, name, None) is not None:
                setattr(self.pipe, name, None)
        self._text_encoders_freed = True
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -- images <-> latents ---------------------------------------------------

    @property
    def execution_device(self) -> torch.device:
        return self.pipe._execution_device

    @torch.no_grad()
    def encode_image(self, image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
        """uint8 RGB -> shifted, scaled VAE latent (``latent_dist.mode()``) at ``size``."""
        vae = self.pipe.vae
        pixels = self.pipe.image_processor.preprocess(Image.fromarray(image), height=size[0],
                                                      width=size[1])
        pixels = pixels.to(self.execution_device, vae.dtype)
        latent = vae.encode(pixels).latent_dist.mode()
        return (latent - (vae.config.shift_factor or 0.0)) * vae.config.scaling_factor

    @torch.no_grad()
    def decode_latent(self, latent: torch.Tensor) -> np.ndarray:
        """Shifted, scaled VAE latent -> uint8 RGB."""
        vae = self.pipe.vae
        latent = latent / vae.config.scaling_factor + (vae.config.shift_factor or 0.0)
        pixels = vae.decode(latent.to(self.execution_device, vae.dtype), return_dict=False)[0]
        out = self.pipe.image_processor.postprocess(pixels.float(), output_type="np")[0]
        return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)

    # -- the edit -------------------------------------------------------------

    def edit(self, image: np.ndarray, settings: EditSettings, *,
             key: str | None = None, progress: bool = False) -> np.ndarray:
        """FlowEdit one image; returns uint8 RGB at the input's size.

        The noise comes from a generator seeded by ``settings.seed`` and the
        image ``key`` (default: a hash of its pixels), so results do not depend
        on order or batch.
        """
        height, width = image.shape[:2]
        size = working_size(height, width, settings.max_side)
        x_src = self._to_model_space(self.encode_image(image, size))
        v_src, v_tgt, v_pair = self.velocities(settings, size)
        generator = image_generator(settings.seed, key or image_key(image))
        z = flowedit(x_src, v_src, v_tgt, self.sigmas(settings.steps, x_src),
                     n_max=settings.n_max, n_min=settings.n_min, n_avg=settings.n_avg,
                     generator=generator, v_pair=v_pair, progress=progress)
        edited = self.decode_latent(self._from_model_space(z, size))
        if edited.shape[:2] != (height, width):
            edited = np.asarray(Image.fromarray(edited).resize((width, height), Image.LANCZOS))
        return edited

    # -- family-specific ------------------------------------------------------

    def _encode_prompt(self, text: str):
        raise NotImplementedError

    def velocities(
        self, settings: EditSettings, size: tuple[int, int]
    ) -> tuple[Velocity, Velocity, VelocityPair]:
        """Guided (v_src, v_tgt, v_pair) for these prompts, guidance scales and pixel size."""
        raise NotImplementedError

    def sigmas(self, steps: int, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _to_model_space(self, latent: torch.Tensor) -> torch.Tensor:
        return latent

    def _from_model_space(self, z: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return z
