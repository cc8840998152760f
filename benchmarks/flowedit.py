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

``--firewall`` adds, per family: the whole firewall for one photo (identity edit,
heal, identity edit of the healed photo, mask), its peak GPU memory, seconds per edit
with 1, 2 and 4 photos per transformer call, and each of ``--optimisations`` timed on
and off in the same run (``sdpa``: fused attention vs PyTorch's math kernel;
``prompt_cache``: prompts encoded once vs every edit, from the published text
encoders' measured cost with ``--arch full``; ``vae_tiling``; ``compile``:
``torch.compile`` of the transformer, with its compile time). The GPU run
(docs/firewall_throughput.md):

    python benchmarks/flowedit.py --arch full --device cuda --size 1024x768 --firewall --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

import _repo  # noqa: F401  (research/ and simulations/ from the checkout)
from deid_client.editing.backends import backend_for
from deid_client.firewall.config import published_edit
from deid_client.phantom import make_phantom
from deid_client.phantom.language import TEMPLATE

SRC, TGT = "a photo of a woman, with facial erythema", "a photo of a man, with facial erythema"


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
    from deid_client.editing.backends.flux import _Prompt as FluxPrompt
    from deid_client.editing.backends.sd3 import _Prompt as SD3Prompt

    g = torch.Generator().manual_seed(0)
    for text in texts:
        if backend.family == "sd3":  # 77 CLIP + 256 T5 tokens; CLIP-L + CLIP-G pooled
            backend._embeddings[text] = SD3Prompt(torch.randn(1, 333, 4096, generator=g).to(device, dtype),
                                               torch.randn(1, 2048, generator=g).to(device, dtype))
        else:  # 512 T5 tokens, CLIP-L pooled
            backend._embeddings[text] = FluxPrompt(torch.randn(1, 512, 4096, generator=g).to(device, dtype),
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


def text_encoder_seconds(family: str, device, dtype, repeats: int) -> float:
    """Seconds to encode one prompt with the family's published text encoders (random
    weights, random token ids): what the prompt cache saves per prompt it does not encode."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    clip_l = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                            num_attention_heads=12, projection_dim=768)
    clip_g = CLIPTextConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                            num_attention_heads=20, projection_dim=1280)
    t5_xxl = T5Config(d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24,
                      feed_forward_proj="gated-gelu", vocab_size=32128)
    with torch.device(device):
        encoders = [(CLIPTextModelWithProjection(clip_l), 77), (T5EncoderModel(t5_xxl), 256)]
        if family == "sd3":
            encoders.insert(1, (CLIPTextModelWithProjection(clip_g), 77))
    encoders = [(e.to(dtype).eval(), n) for e, n in encoders]

    def encode():
        with torch.no_grad():
            for encoder, tokens in encoders:
                encoder(torch.randint(0, 32000 if tokens == 256 else 49000, (1, tokens), device=device))
        _sync(device)

    encode()
    started = time.perf_counter()
    for _ in range(repeats):
        encode()
    seconds = (time.perf_counter() - started) / repeats
    encoders.clear()  # free the GPU memory before the next measurement
    return seconds


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_memory_gb(device) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None


def _reset_peak(device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def timed(run, device, repeats: int) -> float:
    """Median seconds of ``run()`` after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        _sync(device)
        started = time.perf_counter()
        run()
        _sync(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def firewall(backend, image, settings, twin_n_max: int, device, repeats: int) -> dict:
    """The whole firewall for one photo (identity edit, heal, identity edit of the healed
    photo in the same call, mask, the identity gate on the CPU; ``privacy=low``:
    ``twin_from=patient``, the lesion edited) and its peak memory. The heal uses the identity
    edit's schedule over its last ``twin_n_max`` steps (the phantom model heals over its last
    2 of 28; SD3 / FLUX twin settings are not tuned yet: no real weights here)."""
    from dataclasses import replace

    from deid_client.firewall import Firewall, compose_firewall
    from research.firewall_probes import gate_verdict

    cfg = compose_firewall(["privacy=low", "theta=5.0"])
    cfg = replace(cfg, identity=settings, twin=settings.with_overrides(n_max=twin_n_max),
                  prompts=replace(cfg.prompts, patient=SRC.replace(cfg.prompts.condition, "{condition}")))
    fw = Firewall(cfg, backend)

    def run():
        (result,) = fw.synthesise([image], [TGT])  # SRC -> TGT: the prompts encoded beforehand
        return gate_verdict(fw, image, result)

    _reset_peak(device)
    seconds = timed(run, device, repeats)
    return {"firewall_seconds": seconds, "firewall_peak_memory_gb": _peak_memory_gb(device)}


def batch_throughput(backend, image, settings, device, repeats: int, sizes=(1, 2, 4)) -> dict:
    """Seconds per identity edit when ``n`` photos share each transformer call."""
    out = {}
    for n in sizes:
        faces = [np.roll(image, 7 * i, axis=1) for i in range(n)]  # n different photos
        out[str(n)] = timed(lambda faces=faces: backend.edit_batch(faces, settings), device, repeats) / n
    return out


def optimisations(backend, image, settings, device, repeats: int, names: list[str]) -> dict:
    """Seconds per identity edit with each optimisation on and off, in this same run."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def edit():
        return backend.edit(image, settings)

    out = {}
    for name in names:
        if name == "sdpa":  # off: PyTorch's plain math attention instead of the fused kernels
            def off():
                with sdpa_kernel(SDPBackend.MATH):
                    edit()
            out[name] = {"on": timed(edit, device, repeats), "off": timed(off, device, repeats)}
        elif name == "compile":
            plain = backend.pipe.transformer
            off = timed(edit, device, repeats)
            backend.pipe.transformer = torch.compile(plain)
            started = time.perf_counter()
            edit()  # compiles
            compile_seconds = time.perf_counter() - started
            try:
                out[name] = {"on": timed(edit, device, repeats), "off": off,
                             "compile_seconds": compile_seconds}
            finally:
                backend.pipe.transformer = plain
        elif name == "prompt_cache":  # off: every edit encodes its prompts again
            if backend._text_encoders_freed:  # --arch full has no text encoders: see main()
                continue

            def off():
                backend._embeddings.clear()
                edit()
            out[name] = {"on": timed(edit, device, repeats), "off": timed(off, device, repeats)}
        elif name == "vae_tiling":
            _reset_peak(device)
            off = timed(edit, device, repeats)
            off_memory = _peak_memory_gb(device)
            backend.pipe.vae.enable_tiling()
            _reset_peak(device)
            try:
                out[name] = {"on": timed(edit, device, repeats), "off": off,
                             "peak_memory_gb_on": _peak_memory_gb(device), "peak_memory_gb_off": off_memory}
            finally:
                backend.pipe.vae.disable_tiling()
        else:
            raise ValueError(f"unknown optimisation {name!r}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="FlowEdit per-edit timings")
    parser.add_argument("--arch", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--family", choices=("sd3", "flux", "both"), default="both")
    parser.add_argument("--size", default="256x192", help="WIDTHxHEIGHT of the input")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--firewall", action="store_true",
                        help="also: the whole firewall, photos per call, text encoders, optimisations")
    parser.add_argument("--optimisations", default="sdpa,prompt_cache,vae_tiling,compile",
                        help="with --firewall: comma-separated, each timed on and off")
    parser.add_argument("--twin-n-max", type=int, help="with --firewall: the heal's window "
                        "(default: the last quarter of the schedule)")
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
            from research.tiny_pipelines import tiny_flux_pipeline, tiny_sd3_pipeline

            pipe = (tiny_sd3_pipeline if family == "sd3" else tiny_flux_pipeline)()
            backend = backend_for(pipe, device=device, dtype=dtype, max_sequence_length=32)
        else:
            backend = backend_for(full_pipeline(family, dtype, device), device=device, dtype=dtype)
            random_prompts(backend, (SRC, TGT, TEMPLATE.healthy_prompt(SRC)), device, dtype)
        settings = published_edit(backend.family, SRC, TGT, max_side=max(width, height))
        _reset_peak(device)
        ours = measure(backend, image, settings, args.repeats, True, device)
        peak = _peak_memory_gb(device)
        base = measure(backend, image, settings, args.repeats, False, device)
        results[family] = {"arch": args.arch, "device": str(device), "size": f"{width}x{height}",
                           "steps": settings.steps, "n_max": settings.n_max, **ours,
                           "peak_memory_gb": peak,
                           "baseline_seconds_per_edit": base["seconds_per_edit"],
                           "baseline_transformer_calls": base["transformer_calls"],
                           "speedup_vs_baseline": base["seconds_per_edit"] / ours["seconds_per_edit"]}
        if device.type == "cuda":
            results[family]["gpu"] = torch.cuda.get_device_name(device)
        if args.firewall:
            r = results[family]
            twin_n_max = args.twin_n_max or max(1, round(settings.steps / 4))
            r |= firewall(backend, image, settings, twin_n_max, device, args.repeats)
            r["twin_n_max"] = twin_n_max
            r["seconds_per_edit_by_photos_per_call"] = batch_throughput(backend, image, settings, device,
                                                                        args.repeats)
            names = [n for n in args.optimisations.split(",") if n]
            r["optimisations"] = optimisations(backend, image, settings, device, args.repeats, names)
            if args.arch == "full" and "prompt_cache" in names:  # the encoders' measured cost
                text = text_encoder_seconds(family, device, dtype, args.repeats)
                prompts = 3 if family == "sd3" else 2  # source, target (and SD3's empty prompt)
                r["optimisations"]["prompt_cache"] = {
                    "on": r["seconds_per_edit"], "off": r["seconds_per_edit"] + prompts * text,
                    "text_encoding_seconds_per_prompt": text}
        del backend
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for family, r in results.items():
        print(f"{family:4s} {r['arch']} {r['size']} on {r['device']}: {r['seconds_per_edit']:.3f} s/edit, "
              f"{r['transformer_calls']} transformer calls (T={r['steps']}, n_max={r['n_max']}), "
              f"{100 * r['share_outside_transformer']:.1f}% outside the transformer | "
              f"baseline (sides in separate calls): {r['baseline_seconds_per_edit']:.3f} s, "
              f"{r['baseline_transformer_calls']} calls, speed-up x{r['speedup_vs_baseline']:.2f}")
        if args.firewall:
            print(f"     whole firewall {r['firewall_seconds']:.3f} s; per edit by photos per call "
                  f"{ {k: round(v, 3) for k, v in r['seconds_per_edit_by_photos_per_call'].items()} }; "
                  f"optimisations {json.dumps(r['optimisations'])}")


if __name__ == "__main__":
    main()
