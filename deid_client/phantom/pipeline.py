"""The phantom rectified-flow model as a diffusers pipeline.

A pixel-space SD3-style MMDiT (``SD3Transformer2DModel``, 4x4 patches on 64x64
RGB) conditioned on a small CLIP text encoder over a word-level tokenizer.
It follows SD3's conventions exactly (velocity ``noise - x0``, timestep
``1000 * sigma``, sequence embeddings plus a pooled embedding), so FlowEdit
drives it the same way as SD3; only the VAE is missing: the "latent" is the
image itself scaled to -1..1.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from tqdm.auto import tqdm
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

from .language import vocabulary

__all__ = ["PhantomFlowPipeline", "IMAGE_SIZE", "MAX_TOKENS", "to_model_space", "to_image"]

IMAGE_SIZE = 64
MAX_TOKENS = 24
_TEXT_WIDTH = 64
_SPECIAL = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]  # [EOS] is not id 2: CLIP treats 2 as legacy


def to_model_space(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) or (H, W, 3) -> float (N, 3, H, W) in -1..1."""
    images = np.asarray(images)
    if not images.flags.writeable:  # cached arrays are read-only; torch warns on sharing them
        images = images.copy()
    if images.ndim == 3:
        images = images[None]
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_image(x: torch.Tensor) -> np.ndarray:
    """float (N, 3, H, W) in -1..1 -> uint8 (N, H, W, 3)."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round()
    return x.permute(0, 2, 3, 1).to(torch.uint8).numpy()


def _tokenizer() -> PreTrainedTokenizerFast:
    vocab = {token: i for i, token in enumerate(_SPECIAL + vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # splits off the commas
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", vocab["[BOS]"]), ("[EOS]", vocab["[EOS]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   bos_token="[BOS]", eos_token="[EOS]", model_max_length=MAX_TOKENS)


class PhantomFlowPipeline(DiffusionPipeline):
    """Text-to-image rectified flow over 64x64 skin phantoms.

    >>> pipe = PhantomFlowPipeline.build(seed=0)
    >>> pipe("a photo of a woman, with facial erythema", num_inference_steps=2).shape
    (1, 64, 64, 3)
    """

    model_cpu_offload_seq = "text_encoder->transformer"

    def __init__(self, transformer: SD3Transformer2DModel, text_encoder: CLIPTextModel,
                 tokenizer: PreTrainedTokenizerFast, scheduler: FlowMatchEulerDiscreteScheduler):
        super().__init__()
        self.register_modules(transformer=transformer, text_encoder=text_encoder,
                              tokenizer=tokenizer, scheduler=scheduler)

    @classmethod
    def build(cls, seed: int = 0) -> PhantomFlowPipeline:
        """A fresh, untrained pipeline (the architecture the shipped weights use)."""
        torch.manual_seed(seed)
        tokenizer = _tokenizer()
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=_TEXT_WIDTH, intermediate_size=2 * _TEXT_WIDTH,
            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=MAX_TOKENS,
            projection_dim=_TEXT_WIDTH, pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
        transformer = SD3Transformer2DModel(
            sample_size=IMAGE_SIZE, patch_size=4, in_channels=3, out_channels=3, num_layers=6,
            attention_head_dim=32, num_attention_heads=4, joint_attention_dim=_TEXT_WIDTH,
            caption_projection_dim=128, pooled_projection_dim=_TEXT_WIDTH,
            pos_embed_max_size=IMAGE_SIZE // 4)
        scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0)
        return cls(transformer, text_encoder, tokenizer, scheduler)

    def encode_prompt(self, prompt: str | list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(sequence embeddings (N, MAX_TOKENS, 64), pooled embeddings (N, 64))."""
        texts = [prompt] if isinstance(prompt, str) else list(prompt)
        tokens = self.tokenizer(texts, padding="max_length", max_length=MAX_TOKENS, truncation=True,
                                return_tensors="pt")
        unknown = (tokens.input_ids == self.tokenizer.unk_token_id).any(dim=1)
        if unknown.any():
            bad = texts[int(unknown.nonzero()[0])]
            raise ValueError(f"prompt {bad!r} has words the phantom model does not know; "
                             f"its vocabulary: {' '.join(vocabulary())}")
        out = self.text_encoder(tokens.input_ids.to(self.text_encoder.device))
        return out.last_hidden_state, out.pooler_output

    def velocity(self, x: torch.Tensor, sigma: float | torch.Tensor, embeds: torch.Tensor,
                 pooled: torch.Tensor) -> torch.Tensor:
        """The model's velocity (``noise - x0``) at noise level ``sigma`` in 0..1."""
        timestep = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1) * 1000.0
        return self.transformer(hidden_states=x, encoder_hidden_states=embeds,
                                pooled_projections=pooled, timestep=timestep.expand(x.shape[0]),
                                return_dict=False)[0]

    @torch.no_grad()
    def __call__(self, prompt: str | list[str], *, num_inference_steps: int = 28,
                 guidance_scale: float = 4.0, generator: torch.Generator | None = None,
                 progress: bool = False) -> np.ndarray:
        """Sample one image per prompt; uint8 (N, 64, 64, 3)."""
        texts = [prompt] if isinstance(prompt, str) else list(prompt)
        cond, cond_pooled = self.encode_prompt(texts)
        uncond, uncond_pooled = self.encode_prompt([""] * len(texts))
        embeds, pooled = torch.cat([uncond, cond]), torch.cat([uncond_pooled, cond_pooled])
        x = torch.randn((len(texts), 3, IMAGE_SIZE, IMAGE_SIZE), generator=generator,
                        device=generator.device if generator else "cpu").to(self.device)
        self.scheduler.set_timesteps(num_inference_steps)
        for sigma, sigma_next in tqdm(list(zip(self.scheduler.sigmas[:-1], self.scheduler.sigmas[1:])),
                                      desc="sampling", disable=not progress):
            u, c = self.velocity(torch.cat([x, x]), sigma, embeds, pooled).chunk(2)
            x = x + (sigma_next - sigma) * (u + guidance_scale * (c - u))
        return to_image(x)
