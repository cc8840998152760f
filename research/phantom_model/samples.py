"""A labelled grid of samples per prompt, to see whether the model follows its prompts.

    python -m research.phantom_model.samples -o phantom_samples.png [--model FOLDER]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from deid_client.figures import image_grid, save_figure
from deid_client.phantom.language import describe
from deid_client.phantom.pipeline import PhantomFlowPipeline

__all__ = ["GRID_PROMPTS", "sample_grid", "main"]

#: Sex class x three skin types x condition: 12 rows.
GRID_PROMPTS = [describe(sex=sex, skin_type=skin, erythema=erythema)
                for sex in ("female", "male") for skin in (1, 3, 6) for erythema in (True, False)]


def sample_grid(pipe: PhantomFlowPipeline, prompts: list[str] = GRID_PROMPTS, per_prompt: int = 8, *,
                steps: int = 28, guidance_scale: float = 4.0, seed: int = 0) -> plt.Figure:
    """One row of ``per_prompt`` samples for each prompt, the prompt written beside it."""
    generator = torch.Generator().manual_seed(seed)
    rows = [pipe([p] * per_prompt, num_inference_steps=steps, guidance_scale=guidance_scale,
                 generator=generator) for p in prompts]
    grid = image_grid([img for row in rows for img in row], ncols=per_prompt)
    fig, ax = plt.subplots(figsize=(per_prompt * 0.9 + 5.0, len(prompts) * 0.9 + 0.4), dpi=110)
    ax.imshow(grid)
    pitch = grid.shape[0] / len(prompts)
    ax.set_yticks((np.arange(len(prompts)) + 0.5) * pitch, [p.replace("a photo of ", "") for p in prompts],
                  fontsize=7)
    ax.set_xticks([])
    ax.set_title(f"phantom model samples ({steps} steps, guidance {guidance_scale})", fontsize=9)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> None:
    from deid_client.phantom.model import WEIGHTS_DIR

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, required=True, help="PNG to write")
    parser.add_argument("--model", type=Path, default=WEIGHTS_DIR, help="pipeline folder")
    parser.add_argument("--per-prompt", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    pipe = PhantomFlowPipeline.from_pretrained(args.model)
    save_figure(sample_grid(pipe, per_prompt=args.per_prompt, seed=args.seed), args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
