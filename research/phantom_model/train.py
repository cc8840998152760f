"""Train the phantom rectified-flow model, reproducibly (seeded), in four stages.

    # stage 1: learn to draw phantoms from prompts (71 min on 2 CPU cores)
    python -m research.phantom_model.train --out stage1
    # stage 2: learn what "with facial erythema" vs "with clear, healthy skin" changes (21 min)
    python -m research.phantom_model.train --out stage2 \
        --resume stage1 --steps 1200 --batch-size 16 --lr 5e-4 --contrast 300 --lesion-weight 3
    # stage 3: both losses, 8x the phantoms, 30x the images seen (6.4 min on one H100;
    # with --device cpu --workers 2 the same run takes about 11 h on 2 CPU cores)
    python -m research.phantom_model.train --out stage3 \
        --resume stage2 --people 48000 --steps 2400 --batch-size 256 --lr 3e-4 \
        --lesion-weight 3 --contrast 300 --device cuda --threads 8 --workers 16
    # stage 4: the lesion passes through every caption, so FlowEdit carries it (16 min)
    python -m research.phantom_model.train --out deid_client/phantom/weights \
        --resume stage3 --steps 700 --batch-size 16 --lr 2e-4 --lesion-weight 3 \
        --contrast 300 --carry 300

Renders ``--people`` random phantoms at 64 px (each with a random lesion and its
exact healthy twin, captioned with "... with facial erythema" / "... with
clear, healthy skin"), then trains with the rectified-flow loss: ``x_t = (1 - t) x0
+ t noise``, target velocity ``noise - x0``, t from a logit-normal (as SD3).
Captions drop each attribute 20% of the time and the whole prompt 10% of the
time (classifier-free guidance). Stage 1 alone does not learn the condition
phrase (a lesion is ~1.5% of the pixels, under the noise); stage 2 adds the
*contrast* term (see :func:`train`), exact paired supervision that only the
phantom world can give; stage 4 adds the *carry* term, without which the identity
edit loses most of the lesion. The saved weights are an exponential moving average;
``training_log.json`` records the settings, loss curve and wall time of each stage.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from deid_client.phantom import render_phantom, sample_identity, sample_lesion
from deid_client.phantom.language import ERYTHEMA, TEMPLATE, random_prompt_for
from deid_client.phantom.pipeline import IMAGE_SIZE, PhantomFlowPipeline, to_model_space

__all__ = ["render_training_set", "train", "main"]

TRAINING_SEED = 0x7A1  # identities for training; benchmarks draw theirs from other seeds
CONTRAST_MAX_T = 0.2  # noise levels of the contrast pairs: 0..0.2 (see train())
CARRY_MAX_T = 0.3  # noise levels of the carry pairs: below ~0.3 the model can see a lesion


def _render_chunk(args: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    seed, start, count = args
    images, healthy, masks, people = [], [], [], []
    for index in range(start, start + count):
        rng = np.random.default_rng([seed, index])
        person = sample_identity(rng)
        phantom = render_phantom(person, sample_lesion(rng), IMAGE_SIZE)
        images.append(phantom.image)
        healthy.append(phantom.twin)
        masks.append(phantom.mask)
        people.append(person)
    return np.stack(images), np.stack(healthy), np.stack(masks), people


def render_training_set(n_people: int, *, seed: int = TRAINING_SEED, workers: int = 2):
    """(images with lesions, their healthy twins, lesion masks, identities) of ``n_people``
    random phantoms."""
    chunks = [(seed, start, min(500, n_people - start)) for start in range(0, n_people, 500)]
    with ProcessPoolExecutor(workers) as pool:
        parts = list(tqdm(pool.map(_render_chunk, chunks), total=len(chunks), desc="rendering",
                          unit="chunk"))
    return (*(np.concatenate([p[k] for p in parts]) for k in range(3)),
            [person for p in parts for person in p[3]])


def train(pipe: PhantomFlowPipeline, images: np.ndarray, healthy: np.ndarray, people: list, *,
          steps: int, batch_size: int = 32, lr: float = 5e-4, ema_decay: float = 0.998,
          masks: np.ndarray | None = None, lesion_weight: float = 0.0, paired: float = 0.0,
          contrast: float = 0.0, contrast_max_t: float = CONTRAST_MAX_T, carry: float = 0.0,
          carry_max_t: float = CARRY_MAX_T, seed: int = 0,
          device: str = "cpu", log_every: int = 25, on_checkpoint=None, checkpoint_every: int = 0,
          progress: bool = True) -> tuple[PhantomFlowPipeline, list[dict]]:
    """Train in place; returns a copy of the pipeline holding the EMA weights, and the loss log.

    ``lesion_weight`` > 0 weights the loss by ``1 + lesion_weight`` around each lesion
    (``masks``, dilated by 2 px) in both the image and its twin: the lesion covers ~1.5%
    of a picture, so an unweighted loss barely learns what "erythema" vs "healthy" means.
    ``paired`` is the share of lesion images that are captioned "healthy" and given their
    twin's velocity as the target (``noise - x_healthy`` from ``x_t`` of the lesion image):
    paired supervision of what the healthy prompt must change, which the phantom world
    can give and a 3.5M-parameter model trained for an hour on a CPU does not infer.
    ``contrast`` > 0 also evaluates every captioned lesion image of the batch under its own
    and its healthy caption (one ``x_t`` at a low noise level, t < ``contrast_max_t``) and adds
    ``contrast`` times the error of what the caption swap changes in the predicted clean image,
    ``x0_erythema - x0_healthy = t * (v_healthy - v_erythema)``, against its exact value
    ``x_lesion - x_twin``. This is the quantity FlowEdit's last step adds to the source
    (``X_src + x0_tgt - x0_src``), so it is what the twin edit needs; the noise both
    predictions share cancels in the difference, where in the plain loss the lesion is a
    1% signal under it.
    ``carry`` > 0 adds the *carry* term: each of those lesion images and its twin, noised
    with the same noise to t < ``carry_max_t``, under one caption (its own, none, or another
    person's, the lesion then added to that person's twin), and ``carry`` times the error of
    the difference of their predicted clean images against the lesion itself. FlowEdit
    keeps a lesion only where the target side's guided prediction passes it through as
    much as the source side's; passing it through unchanged under every caption, the
    empty one included, makes both sides the same.
    """
    rng = np.random.default_rng([seed, 0xF10])
    generator = torch.Generator().manual_seed(seed)
    # Every random draw comes from the CPU generators, so a run is the same on any device.
    pixels = torch.cat([to_model_space(images), to_model_space(healthy)]).to(device)
    n = len(images)
    weights = torch.ones(n, 1, *images.shape[1:3], device=device)
    if lesion_weight > 0:
        around = torch.nn.functional.max_pool2d(torch.from_numpy(masks).float()[:, None], 5, 1, 2)
        weights = 1.0 + lesion_weight * around.to(device)
    pipe.to(device)
    modules = torch.nn.ModuleList([pipe.transformer, pipe.text_encoder]).train()
    ema = copy.deepcopy(modules).eval().requires_grad_(False)
    optimiser = torch.optim.AdamW(modules.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * s / steps)))
    log, started = [], time.perf_counter()
    running: dict[str, list[float]] = {"loss": [], "contrast": [], "carry": []}
    for step in tqdm(range(1, steps + 1), desc="training", disable=not progress):
        index = torch.randint(0, 2 * n, (batch_size,), generator=generator)
        image = pixels[index.to(device)]
        flip = (torch.rand(batch_size, generator=generator) < 0.5).to(device)
        image = torch.where(flip[:, None, None, None], image.flip(3), image)
        w = weights[(index % n).to(device)]
        w = torch.where(flip[:, None, None, None], w.flip(3), w)
        pair = torch.zeros(batch_size, dtype=torch.bool)
        if paired > 0:  # (no draw otherwise: runs without pairing stay reproducible)
            pair = (index < n) & (torch.rand(batch_size, generator=generator) < paired)
        captions = ["" if rng.uniform() < 0.1 and not p else
                    random_prompt_for(people[int(i) % n], erythema=int(i) < n and not p, rng=rng)
                    for i, p in zip(index, pair, strict=True)]
        t = _column(torch.sigmoid(torch.randn(batch_size, generator=generator)), device)
        noise = torch.randn(image.shape, generator=generator).to(device)
        x_t = _noised(image, noise, t)
        twin = pixels[((index + n) % (2 * n)).to(device)]
        twin = torch.where(flip[:, None, None, None], twin.flip(3), twin)
        target = torch.where(pair.to(device)[:, None, None, None], twin, image)  # x0 of the velocity
        # The contrast term: every lesion image captioned "... with facial erythema", seen again
        # under that caption and its healthy one at its own, low noise level, where the lesion
        # is visible, so its removal is learnable exactly (and that is where the twin edit works).
        lesioned = [k for k, c in enumerate(captions) if ERYTHEMA in c]
        both = lesioned if contrast > 0 else []
        t_both = _column(contrast_max_t * torch.rand(len(both), generator=generator), device)
        x_both = _noised(image[both], noise[both], t_both)
        # The carry term: lesion images and their twins under one caption: their own, none
        # (the unconditional side of guidance), or another person's, the lesion then moved
        # onto that person's twin (what the identity edit's target side is shown).
        kept = lesioned if carry > 0 and len(lesioned) > 1 else []
        t_kept = _column(carry_max_t * torch.rand(len(kept), generator=generator), device)
        mode = torch.randint(0, 3, (len(kept),), generator=generator).tolist()  # own, none, other
        other = [kept[(j + 1) % len(kept)] for j in range(len(kept))]
        carry_captions = [captions[o] if m == 2 else "" if m == 1 else captions[k]
                          for k, o, m in zip(kept, other, mode, strict=True)]
        moved = torch.tensor([m == 2 for m in mode], dtype=torch.bool, device=device)[:, None, None, None]
        base = torch.where(moved, twin[other], twin[kept])  # the healthy face the lesion is on
        lesion = (base + image[kept] - twin[kept]).clamp(-1, 1) - base
        x_kept = torch.cat([_noised(base + lesion, noise[kept], t_kept),
                            _noised(base, noise[kept], t_kept)])
        embeds, pooled = pipe.encode_prompt(
            captions + [captions[k] for k in both] + [TEMPLATE.healthy_prompt(captions[k]) for k in both]
            + carry_captions * 2)
        velocity = pipe.velocity(torch.cat([x_t, x_both, x_both, x_kept]),
                                 torch.cat([t, t_both, t_both, t_kept, t_kept]).flatten(),
                                 embeds, pooled)
        v_plain, v_both, v_kept = velocity.split([batch_size, 2 * len(both), 2 * len(kept)])
        error = (v_plain - (noise - target)).pow(2)
        loss = _weighted(error, w)
        if both:
            erythema, healthy_v = v_both.chunk(2)
            change = t_both * (healthy_v - erythema)  # x0_erythema - x0_healthy
            term = _weighted((change - (image[both] - twin[both])).pow(2), w[both])
            running["contrast"].append(term.item())
            loss = loss + contrast * term
        if kept:
            v_lesion, v_twin = v_kept.chunk(2)
            # x0_lesion - x0_twin = (1 - t) (lesion - twin) - t (v_lesion - v_twin)
            passed = (1 - t_kept) * lesion - t_kept * (v_lesion - v_twin)
            term = _weighted((passed - lesion).pow(2), w[kept])
            running["carry"].append(term.item())
            loss = loss + carry * term
        running["loss"].append(loss.item())  # the whole objective, as every stage logged it
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(modules.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        with torch.no_grad():
            decay = min(ema_decay, (1 + step) / (10 + step))  # short warm-up of the average
            for p_ema, p in zip(ema.parameters(), modules.parameters(), strict=True):
                p_ema.lerp_(p, 1 - decay)
        if step % log_every == 0 or step == steps:
            log.append({"step": step, "seconds": round(time.perf_counter() - started, 1)})
            log[-1].update({k: float(np.mean(v)) for k, v in running.items() if v})
            running = {k: [] for k in running}
        if on_checkpoint and checkpoint_every and step % checkpoint_every == 0 and step < steps:
            on_checkpoint(_with_weights(pipe, ema), step)
    modules.eval()
    pipe.to("cpu")
    return _with_weights(pipe, ema.to("cpu")), log


def _column(t: torch.Tensor, device: str) -> torch.Tensor:
    """Noise levels (N,) as an (N, 1, 1, 1) column on ``device``, to broadcast over images."""
    return t.to(device)[:, None, None, None]


def _noised(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The rectified-flow point ``x_t = (1 - t) x0 + t noise`` (``t`` a column)."""
    return (1 - t) * x0 + t * noise


def _weighted(error: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (error * weights).mean() / weights.mean()


def _with_weights(pipe: PhantomFlowPipeline, ema: torch.nn.ModuleList) -> PhantomFlowPipeline:
    return PhantomFlowPipeline(copy.deepcopy(ema[0]), copy.deepcopy(ema[1]), pipe.tokenizer,
                               copy.deepcopy(pipe.scheduler))


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="pipeline folder to write")
    parser.add_argument("--people", type=int, default=6000, help="training phantoms (x2 with twins)")
    parser.add_argument("--steps", type=int, default=2400)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--workers", type=int, default=2, help="processes rendering the training set")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for a faster (not bit-identical) run")
    parser.add_argument("--resume", type=Path, help="start from this pipeline folder (fine-tuning)")
    parser.add_argument("--lesion-weight", type=float, default=0.0,
                        help="extra loss weight around lesions (see train())")
    parser.add_argument("--paired", type=float, default=0.0,
                        help="share of lesion images trained towards their twin (see train())")
    parser.add_argument("--contrast", type=float, default=0.0,
                        help="weight of the healthy-minus-erythema velocity term (see train())")
    parser.add_argument("--carry", type=float, default=0.0,
                        help="weight of the lesion-passes-through term (see train())")
    parser.add_argument("--checkpoint-every", type=int, default=100,
                        help="also write the EMA weights to OUT/checkpoint every N steps")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    images, healthy, masks, people = render_training_set(args.people, workers=args.workers)
    rendered = time.perf_counter() - started
    pipe = (PhantomFlowPipeline.from_pretrained(args.resume) if args.resume
            else PhantomFlowPipeline.build(seed=args.seed))

    def checkpoint(snapshot: PhantomFlowPipeline, step: int) -> None:
        snapshot.save_pretrained(args.out / "checkpoint")
        (args.out / "checkpoint" / "step.txt").write_text(f"{step}\n")

    trained, log = train(pipe, images, healthy, people, steps=args.steps, batch_size=args.batch_size,
                         lr=args.lr, seed=args.seed, masks=masks, lesion_weight=args.lesion_weight,
                         paired=args.paired, contrast=args.contrast, carry=args.carry,
                         device=args.device,
                         on_checkpoint=checkpoint,
                         checkpoint_every=args.checkpoint_every)
    trained.save_pretrained(args.out)
    total = time.perf_counter() - started
    record = {"arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "torch": torch.__version__, "device_name": _device_name(args.device),
              "render_seconds": round(rendered, 1),
              "wall_seconds": round(total, 1), "loss": log}
    if args.resume and (args.resume / "training_log.json").is_file():  # the whole recipe, stage by stage
        record["resumed_from"] = json.loads((args.resume / "training_log.json").read_text())
    (args.out / "training_log.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out} in {total / 60:.1f} min (final loss {log[-1]['loss']:.4f})")


if __name__ == "__main__":
    main()
