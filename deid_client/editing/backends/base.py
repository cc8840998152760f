"""What every diffusers FlowEdit backend shares: settings, image <-> latent, prompts, ``edit``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from deid_client.editing.flowedit import Velocity, VelocityPair, flowedit
from deid_client.editing.seeds import image_generator, image_key
from deid_client.io.images import resize

__all__ = ["EditSettings", "DiffusersBackend", "working_size", "row_scales", "stack_prompts",
           "batch_for_memory", "CPU_BATCH"]

#: Images per edit call on a CPU: the phantom model is arithmetic-bound there, and larger
#: batches stop paying (benchmarks/firewall.py; docs/firewall_throughput.md).
CPU_BATCH = 4


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

    def __post_init__(self):
        if not 0 <= self.n_min <= self.n_max <= self.steps:
            raise ValueError(f"an edit needs 0 <= n_min <= n_max <= steps, not n_min={self.n_min}, "
                             f"n_max={self.n_max}, steps={self.steps} (n_max=0 with n_min=0: no edit)")

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


def row_scales(values: Sequence[float]) -> torch.Tensor:
    """One scale per batch row (a guidance scale per image), shaped (N, 1, 1, 1) to
    broadcast over (N, C, H, W) latents.

    >>> row_scales([2.5, 4.0]).shape
    torch.Size([2, 1, 1, 1])
    """
    return torch.tensor(list(values), dtype=torch.float32).reshape(-1, 1, 1, 1)


def stack_prompts(prompts: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings, pooled embeddings) of encoded prompts, one row each, in order."""
    return torch.cat([p.embeds for p in prompts]), torch.cat([p.pooled for p in prompts])


def batch_for_memory(free_bytes: int, bytes_per_image: int, *, share: float = 0.8,
                     most: int = 64) -> int:
    """How many images of ``bytes_per_image`` fit in ``share`` of ``free_bytes`` (1 to ``most``).

    >>> batch_for_memory(80 * 2**30, 3 * 2**30), batch_for_memory(2**30, 3 * 2**30)
    (21, 1)
    """
    return int(max(1, min(most, share * free_bytes // max(1, bytes_per_image))))


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

    family: ClassVar[str]  # its FlowEdit defaults: deid_client/firewall/conf/flowedit/<family>.yaml

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
        self._embeddings: dict[str, Any] = {}
        self._text_encoders_freed = False

    # -- prompt embeddings ----------------------------------------------------

    def embedding(self, text: str):
        """Encoded prompt, computed once per backend (prompts repeat across a cohort)."""
        if text not in self._embeddings:
            if self._text_encoders_freed:
                raise ValueError(f"text encoders were freed; prompt {text!r} was not encoded before")
            self._embeddings[text] = self._encode_prompt(text)
        return self._embeddings[text]

    def free_text_encoders(self, *keep_prompts: str) -> None:
        """Encode ``keep_prompts`` (if not yet), then drop the text encoders to save memory."""
        for text in keep_prompts:
            self.embedding(text)
        for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
            if getattr(self.pipe, name, None) is not None:
                setattr(self.pipe, name, None)
        self._text_encoders_freed = True
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -- batching -------------------------------------------------------------

    def images_per_call(self, image: np.ndarray, settings: EditSettings) -> int:
        """How many images like ``image`` one :meth:`edit_batch` call should take: on the CPU
        :data:`CPU_BATCH`; on a GPU as many as fit in its free memory, measured by one probe
        step on ``image``."""
        if self.execution_device.type != "cuda":
            return CPU_BATCH
        torch.cuda.synchronize(self.execution_device)
        torch.cuda.reset_peak_memory_stats(self.execution_device)
        before = torch.cuda.memory_allocated(self.execution_device)
        self.edit(image, settings.with_overrides(steps=1, n_max=1, n_min=0, n_avg=1))
        per_image = torch.cuda.max_memory_allocated(self.execution_device) - before
        free, _ = torch.cuda.mem_get_info(self.execution_device)
        return batch_for_memory(free, per_image)

    # -- images <-> latents ---------------------------------------------------

    @property
    def execution_device(self) -> torch.device:
        return self.pipe._execution_device

    @torch.no_grad()
    def encode_images(self, images: Sequence[np.ndarray], size: tuple[int, int]) -> torch.Tensor:
        """uint8 RGB images -> shifted, scaled VAE latents (``latent_dist.mode()``) at ``size``,
        one row each."""
        vae = self.pipe.vae
        pixels = self.pipe.image_processor.preprocess([Image.fromarray(im) for im in images],
                                                      height=size[0], width=size[1])
        pixels = pixels.to(self.execution_device, vae.dtype)
        latent = vae.encode(pixels).latent_dist.mode()
        return (latent - (vae.config.shift_factor or 0.0)) * vae.config.scaling_factor

    @torch.no_grad()
    def decode_latents(self, latent: torch.Tensor) -> list[np.ndarray]:
        """Shifted, scaled VAE latents -> one uint8 RGB image per row."""
        vae = self.pipe.vae
        latent = latent / vae.config.scaling_factor + (vae.config.shift_factor or 0.0)
        pixels = vae.decode(latent.to(self.execution_device, vae.dtype), return_dict=False)[0]
        out = self.pipe.image_processor.postprocess(pixels.float(), output_type="np")
        return list((np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8))

    # -- the edit -------------------------------------------------------------

    def edit(self, image: np.ndarray, settings: EditSettings, *,
             key: str | None = None, progress: bool = False) -> np.ndarray:
        """FlowEdit one image; returns uint8 RGB at the input's size.

        The noise comes from a generator seeded by ``settings.seed`` and the
        image ``key`` (default: a hash of its pixels), so results do not depend
        on order or batch.
        """
        return self.edit_batch([image], [settings], keys=[key], progress=progress)[0]

    def edit_batch(self, images: Sequence[np.ndarray], settings: EditSettings | Sequence[EditSettings],
                   *, keys: Sequence[str | None] | None = None, progress: bool = False
                   ) -> list[np.ndarray]:
        """FlowEdit many images at once: each step of each group is one transformer call.

        ``settings`` is one for all images or one per image (prompts, guidance and seed
        may differ). Images that share a working size and schedule (steps, window,
        ``n_avg``) form one batch; every image keeps its own noise stream (``settings.seed``
        and its ``key``), so its result does not depend on what else is in the batch
        (up to float rounding of the batched kernels).

        >>> from deid_client.phantom.model import PhantomFlowPipeline
        >>> from deid_client.editing.backends import backend_for
        >>> backend = backend_for(PhantomFlowPipeline.build(), device="cpu")
        >>> faces = [np.full((64, 64, 3), v, np.uint8) for v in (90, 160)]
        >>> edit = EditSettings("a photo of a woman", "a photo of a man", steps=4, n_max=2,
        ...                     gamma_src=2.5, gamma_tgt=2.5)
        >>> [e.shape for e in backend.edit_batch(faces, edit)]
        [(64, 64, 3), (64, 64, 3)]
        """
        images = list(images)
        per_image = [settings] * len(images) if isinstance(settings, EditSettings) else list(settings)
        keys = list(keys) if keys is not None else [None] * len(images)
        if not len(images) == len(per_image) == len(keys):
            raise ValueError(f"{len(images)} images, {len(per_image)} settings and {len(keys)} keys")
        groups: dict[tuple, list[int]] = {}
        for i, (image, s) in enumerate(zip(images, per_image)):
            size = working_size(*image.shape[:2], s.max_side)
            groups.setdefault((size, s.steps, s.n_max, s.n_min, s.n_avg), []).append(i)
        out: list[np.ndarray | None] = [None] * len(images)
        for (size, steps, n_max, n_min, n_avg), members in groups.items():
            batch = [per_image[i] for i in members]
            x_src = self._to_model_space(self.encode_images([images[i] for i in members], size))
            v_src, v_tgt, v_pair = self.velocities(batch, size)
            generators = [image_generator(s.seed, keys[i] or image_key(images[i]))
                          for i, s in zip(members, batch)]
            z = flowedit(x_src, v_src, v_tgt, self.sigmas(steps, x_src), n_max=n_max, n_min=n_min,
                         n_avg=n_avg, generator=generators, v_pair=v_pair, progress=progress)
            for i, edited in zip(members, self.decode_latents(self._from_model_space(z, size))):
                height, width = images[i].shape[:2]
                if edited.shape[:2] != (height, width):
                    edited = resize(edited, (height, width), method="lanczos")
                out[i] = edited
        return out

    # -- family-specific ------------------------------------------------------

    def _encode_prompt(self, text: str):
        raise NotImplementedError

    def velocities(
        self, settings: Sequence[EditSettings], size: tuple[int, int]
    ) -> tuple[Velocity, Velocity, VelocityPair]:
        """Guided (v_src, v_tgt, v_pair) for a batch: row ``i`` uses ``settings[i]``'s prompts
        and guidance scales; all rows are at pixel size ``size``."""
        raise NotImplementedError

    def sigmas(self, steps: int, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _to_model_space(self, latent: torch.Tensor) -> torch.Tensor:
        return latent

    def _from_model_space(self, z: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return z
