"""The phantom world's rectified-flow model: where its weights are, and its pipeline.

The pipeline (and with it diffusers) is imported on first use, so that knowing
where the weights are costs nothing. The model is trained by the lab
(``research/phantom_model/train.py``, docs/phantom_model.md); the package ships
the trained weights.
"""

import json
import os
from pathlib import Path
from urllib.parse import unquote, urlparse

# also, from .pipeline on first use: PhantomFlowPipeline, IMAGE_SIZE, to_image, to_model_space
__all__ = ["WEIGHTS_DIR", "WEIGHTS_ENV", "phantom_weights_dir"]

#: The trained pipeline shipped in the package.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: Environment variable naming another weights folder.
WEIGHTS_ENV = "DEID_PHANTOM_WEIGHTS"
_RELATIVE = Path("deid_client", "phantom", "weights")


def phantom_weights_dir() -> Path:
    """Where the phantom model's weights are: ``$DEID_PHANTOM_WEIGHTS`` if set, else this
    package's own copy, else the installed ``deid-client`` distribution's.

    A Flower app imports this package from its FAB, and a FAB carries code, not
    weights (docs/design.md, Environment: only small text files travel); the SuperNode's installed
    copy (a wheel, a Docker image, an editable checkout) has them.
    """
    if os.environ.get(WEIGHTS_ENV):
        return Path(os.environ[WEIGHTS_ENV])
    for folder in (WEIGHTS_DIR, *_installed_copies()):
        if any(folder.glob("transformer/*.safetensors")):
            return folder
    return WEIGHTS_DIR


def _installed_copies() -> list[Path]:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution("deid-client")
    except PackageNotFoundError:
        return []
    copies = [Path(str(dist.locate_file(_RELATIVE)))]
    try:  # an editable install (pip install -e) points at its checkout
        url = json.loads(dist.read_text("direct_url.json") or "{}").get("url", "")
    except ValueError:
        url = ""
    if url.startswith("file:"):
        copies.append(Path(unquote(urlparse(url).path)) / _RELATIVE)
    return copies


def __getattr__(name: str):
    if name in ("PhantomFlowPipeline", "IMAGE_SIZE", "to_image", "to_model_space"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
