"""FlowEdit timings: per-edit seconds, transformer calls, time outside the transformer.

Our backends evaluate both sides of a step in one batched transformer call
(SD3: batch 4, FLUX: batch 2). The baseline, timed in the same run, is the
same edit with the two sides evaluated by separate calls.

    python benchmarks/flowedit.py                         # tiny pipelines, CPU
    python benchmarks/flowedit.py --arch full --device cuda --size 1024x768
        # the published SD3.5-medium and FLUX.1-dev architectures with random
        # bf16 weights: real timings without the real weights (GPU only)

With ``--arch full`` prompts are random embeddings of the right shapes: the
text encoders run once per prompt, not per edit, so they do not enter the
per-edit time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from deid_client.backends import backend_for
from deid_client.phantom import make_phantom

SRC, TGT = "a photo of a woman with facial erythema", "a photo of a man with facial erythema"


def full_pipeline(family: str, dtype: torch.dtype, device: str | torch.device):
    """Published architectures with random weights, built straight on ``device`` in ``dtype``
    (FLUX.1-dev has 12B parameters: no detour through CPU memory); no text encoders."""
    from diffusers import (AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline,
                           FluxTransformer2DModel, SD3Transformer2DModel, StableDiffusion3Pipeline)

    vae_blocks = dict(down_block_types=("DownEncoderBlock2D",) * 4,
                      up_block_types=("UpDecoderBlock2D",) * 4,
                      block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                      latent_channels=16, use_quant_conv=False, use_post_quant_conv=False)
    no_text = dict(text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            if family == "sd3":  # Stable Diffusion 3.5 medium
                transformer = SD3Transformer2DModel(
                    sample_size=128, patch_size=2, in_channels=16, out_channels=16,
                    num_layers=24, attention_head_dim=64, num_attention_heads=24,
                    joint_attention_dim=4096, caption_projection_dim=1536,
                    pooled_projection_dim=2048, pos_embed_max_size=384,
                    dual_attention_layers=tuple(range(13)), qk_norm="rms_norm")
                vae = AutoencoderKL(shift_factor=0.0609, scaling_factor=1.5035, **vae_blocks)
                return StableDiffusion3Pipeline(
                    transformer=transformer, vae=vae, text_encoder_3=None, tokenizer_3=None,
                    scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), **no_text)
            transformer = FluxTransformer2DModel(  # FLUX.1-dev
                patch_size=1, in_channels=64, num_layers=19, num_single_layers=38,
                attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
                pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56))
            vae = AutoencoderKL(shift_factor=0.1159, scaling_factor=0.3611, **vae_blocks)
            scheduler = FlowMatchEulerDiscreteScheduler(
                shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                base_image_seq_len=256, max_image_seq_len=4096)
            return FluxPipeline(transformer=transformer, vae=vae, scheduler=scheduler, **no_text)
    finally:
        torch.set_default_dtype(previous)


def random_prompts(backend, texts, device, dtype):
    """Fill the prompt cache with random embeddings shaped like the real encoders' output."""
    from deid_client.backends.flux import _Prompt as FluxPrompt
    from deid_client.backends.sd3 import _Prompt as SD3Prompt

    g = torch.Generator().manual_seed(0)
    for text in texts:
        if backend.family == "sd3":  # 77 CLIP + 256 T5 tokens; CLIP-L + CLIP-G pooled
            backend._prompts[text] = SD3Prompt(torch.randn(1, 333, 4096, generator=g).to(device, dtype),
                                               torch.randn(1, 2048, generator=g).to(device, dtype))
        else:  # 512 T5 tokens, CLIP-L pooled
            backend._prompts[text] = FluxPrompt(torch.randn(1, 512, 4096, generator=g).to(device, dtype),
                                                torch.randn(1, 768, generator=g).to(device, dtype),
                                                torch.zeros(512, 3, device=device, dtype=dtype))
    backend._text_encoders_freed = True


def measure(backend, image, settings, repeats: int, joint: bool, device) -> dict:
    """Median seconds per edit, transformer calls per edit, share of time in the transformer."""
    transformer = backend.pipe.transformer
    state = {"calls": 0, "inside": 0.0, "start": 0.0}

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def before(module, args, kwargs):
        sync()
        state["start"] = time.perf_counter()

    def after(module, args, kwargs, output):
        sync()
        state["inside"] += time.perf_counter() - state["start"]
        state["calls"] += 1

    hooks = [transformer.register_forward_pre_hook(before, with_kwargs=True),
             transformer.register_forward_hook(after, with_kwargs=True)]
    original = backend.velocities
    if not joint:  # baseline: no joint call, each side on its own
        backend.velocities = lambda batch, size: (*original(batch, size)[:2], None)
    times, inside, calls = [], [], []
    try:
        backend.edit(image, settings)  # warm-up
        for _ in range(repeats):
            state.update(calls=0, inside=0.0)
            sync()
            start = time.perf_counter()
            backend.edit(image, settings)
            sync()
            times.append(time.perf_counter() - start)
            inside.append(state["inside"])
            calls.append(state["calls"])
    finally:
        backend.velocities = original
        for hook in hooks:
            hook.remove()
    total = statistics.median(times)
    return {"seconds_per_edit": total, "transformer_calls": calls[0],
            "share_outside_transformer": 1 - statistics.median(inside) / total}


def main() -> None:
    parser = argparse.ArgumentParser(description="FlowEdit per-edit timings")
    parser.add_argument("--arch", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--family", choices=("sd3", "flux", "both"), default="both")
    parser.add_argument("--size", default="256x192", help="WIDTHxHEIGHT of the input")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    device = torch.device(args.device)
    if args.arch == "full" and device.type != "cuda":
        parser.error("--arch full needs a CUDA device (a 2.5B / 12B transformer on CPU takes hours)")
    dtype = torch.bfloat16 if args.arch == "full" else torch.float32
    face = make_phantom(0, max(width, height)).image
    image = np.ascontiguousarray(face[:height, :width])

    results = {}
    for family in (("sd3", "flux") if args.family == "both" else (args.family,)):
        if args.arch == "tiny":
            from deid_client.testing import tiny_flux_pipeline, tiny_sd3_pipeline

            pipe = (tiny_sd3_pipeline if family == "sd3" else tiny_flux_pipeline)()
            backend = backend_for(pipe, device=device, dtype=dtype, max_sequence_length=32)
        else:
            backend = backend_for(full_pipeline(family, dtype, device), device=device, dtype=dtype)
            random_prompts(backend, (SRC, TGT), device, dtype)
        settings = backend.settings(SRC, TGT, max_side=max(width, height))
        ours = measure(backend, image, settings, args.repeats, True, device)
        base = measure(backend, image, settings, args.repeats, False, device)
        results[family] = {"arch": args.arch, "device": str(device), "size": f"{width}x{height}",
                           "steps": settings.steps, "n_max": settings.n_max, **ours,
                           "baseline_seconds_per_edit": base["seconds_per_edit"],
                           "baseline_transformer_calls": base["transformer_calls"],
                           "speedup_vs_baseline": base["seconds_per_edit"] / ours["seconds_per_edit"]}
        del backend
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for family, r in results.items():
        print(f"{family:4s} {r['arch']} {r['size']} on {r['device']}: {r['seconds_per_edit']:.3f} s/edit, "
              f"{r['transformer_calls']} transformer calls (T={r['steps']}, n_max={r['n_max']}), "
              f"{100 * r['share_outside_transformer']:.1f}% outside the transformer | "
              f"baseline (sides in separate calls): {r['baseline_seconds_per_edit']:.3f} s, "
              f"{r['baseline_transformer_calls']} calls, speed-up x{r['speedup_vs_baseline']:.2f}")


if __name__ == "__main__":
    main()
