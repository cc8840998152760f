"""The phantom rectified-flow model: prompts, pipeline and the weights shipped with the package.

The pipeline (and with it diffusers) is imported on first use, so that knowing
where the weights are costs nothing.
"""

import os
from pathlib import Path

__all__ = ["PhantomFlowPipeline", "IMAGE_SIZE", "WEIGHTS_DIR", "WEIGHTS_ENV", "describe",
           "phantom_weights_dir", "prompt_for", "to_image", "to_model_space"]

#: The trained pipeline shipped in the package (written by ``python -m deid_client.phantom_flow.train``).
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: Environment variable naming another weights folder. Flower apps need it: a FAB
#: carries this package's code but not its weights.
WEIGHTS_ENV = "DEID_PHANTOM_WEIGHTS"


def phantom_weights_dir() -> Path:
    """``$DEID_PHANTOM_WEIGHTS`` if set, else the weights shipped in the package."""
    return Path(os.environ[WEIGHTS_ENV]) if os.environ.get(WEIGHTS_ENV) else WEIGHTS_DIR


def __getattr__(name: str):
    if name in ("PhantomFlowPipeline", "IMAGE_SIZE", "to_image", "to_model_space"):
        from . import pipeline

        return getattr(pipeline, name)
    if name in ("describe", "prompt_for"):
        from . import prompts

        return getattr(prompts, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
