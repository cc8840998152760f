"""Tiny, real diffusers pipelines for tests and CPU benchmarks: no hub, no download.

The models are the real architectures (SD3's MMDiT, FLUX's transformer, a
KL autoencoder with the usual 8x downsampling, CLIP and T5 text encoders)
at toy sizes with random weights; tokenizers are built locally from a
byte-level vocabulary. Every module is put in eval mode (T5 dropout would
otherwise make outputs random).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    PreTrainedTokenizerFast,
    T5Config,
    T5EncoderModel,
)

__all__ = ["tiny_sd3_pipeline", "tiny_flux_pipeline", "save_tiny_pipeline", "TINY_KINDS"]

TINY_KINDS = ("sd3", "flux")
_WIDTH = 32  # hidden size of every tiny text encoder


def _byte_alphabet() -> list[str]:
    return sorted(pre_tokenizers.ByteLevel.alphabet())


def _clip_tokenizer() -> CLIPTokenizer:
    """CLIP BPE over single bytes (no merges): every prompt is tokenisable."""
    chars = _byte_alphabet()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "vocab.json").write_text(json.dumps(vocab))
        (Path(folder) / "merges.txt").write_text("#version: 0.2\n")
        return CLIPTokenizer(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"),
                             model_max_length=77)


def _t5_tokenizer() -> PreTrainedTokenizerFast:
    chars = _byte_alphabet()
    vocab = {c: i for i, c in enumerate(chars)} | {"<pad>": 256, "</s>": 257, "<unk>": 258}
    backend = Tokenizer(models.BPE(vocab, [], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=512)


def _clip_config(vocab_size: int) -> CLIPTextConfig:
    return CLIPTextConfig(vocab_size=vocab_size, hidden_size=_WIDTH, intermediate_size=37,
                          projection_dim=_WIDTH, num_hidden_layers=2, num_attention_heads=4,
                          max_position_embeddings=77, bos_token_id=vocab_size - 2,
                          eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1)


def _t5() -> T5EncoderModel:
    return T5EncoderModel(T5Config(vocab_size=259, d_model=_WIDTH, d_kv=8, d_ff=37, num_layers=2,
                                   num_heads=4, relative_attention_num_buckets=8,
                                   pad_token_id=256, eos_token_id=257, decoder_start_token_id=256))


def _vae(latent_channels: int, shift: float, scale: float) -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4,
        sample_size=64, shift_factor=shift, scaling_factor=scale,
        use_quant_conv=False, use_post_quant_conv=False)


def _eval(pipe):
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    return pipe


def tiny_sd3_pipeline(seed: int = 0) -> StableDiffusion3Pipeline:
    """A real ``StableDiffusion3Pipeline`` with toy-sized random weights.

    >>> pipe = tiny_sd3_pipeline()
    >>> type(pipe.transformer).__name__, pipe.vae_scale_factor
    ('SD3Transformer2DModel', 8)
    """
    torch.manual_seed(seed)
    tokenizer = _clip_tokenizer()
    clip_config = _clip_config(len(tokenizer))
    transformer = SD3Transformer2DModel(
        sample_size=32, patch_size=2, in_channels=4, out_channels=4, num_layers=2,
        attention_head_dim=8, num_attention_heads=4, joint_attention_dim=_WIDTH,
        caption_projection_dim=32, pooled_projection_dim=2 * _WIDTH, pos_embed_max_size=32)
    return _eval(StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_vae(4, shift=0.0609, scale=1.5035),
        text_encoder=CLIPTextModelWithProjection(clip_config), tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(clip_config), tokenizer_2=_clip_tokenizer(),
        text_encoder_3=_t5(), tokenizer_3=_t5_tokenizer()))


def tiny_flux_pipeline(seed: int = 0, *, guidance_embeds: bool = True) -> FluxPipeline:
    """A real ``FluxPipeline`` with toy-sized random weights.

    ``guidance_embeds=True`` mimics the guidance-distilled FLUX.1-dev,
    ``False`` FLUX.1-schnell.

    >>> pipe = tiny_flux_pipeline()
    >>> type(pipe.transformer).__name__, pipe.vae_scale_factor
    ('FluxTransformer2DModel', 8)
    """
    torch.manual_seed(seed)
    tokenizer = _clip_tokenizer()
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=_WIDTH, pooled_projection_dim=_WIDTH,
        guidance_embeds=guidance_embeds, axes_dims_rope=(4, 4, 8))
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096)
    return _eval(FluxPipeline(
        transformer=transformer, scheduler=scheduler, vae=_vae(4, shift=0.1159, scale=0.3611),
        text_encoder=CLIPTextModel(_clip_config(len(tokenizer))), tokenizer=tokenizer,
        text_encoder_2=_t5(), tokenizer_2=_t5_tokenizer()))


def save_tiny_pipeline(kind: str, path: str | os.PathLike, seed: int = 0) -> Path:
    """Write a tiny ``"sd3"`` or ``"flux"`` pipeline to ``path`` (``from_pretrained`` layout)."""
    builders = {"sd3": tiny_sd3_pipeline, "flux": tiny_flux_pipeline}
    if kind not in builders:
        raise ValueError(f"kind must be one of {TINY_KINDS}, not {kind!r}")
    path = Path(path)
    builders[kind](seed).save_pretrained(path)
    return path
