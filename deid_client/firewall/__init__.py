"""The privacy firewall: patient photos -> synthetic surrogates, healthy twins, erythema masks.

A site with Stable Diffusion 3.5 on disk::

    from deid_client.firewall import Firewall, compose_firewall

    cfg = compose_firewall(["preset=sd35_medium", "model.id=/models/sd35-medium"])
    results = Firewall(cfg, cfg.model.load())(photos)  # one Result per photo

``config`` composes the settings (``conf/``), ``pipeline`` is the :class:`Firewall`
itself, ``prompts`` the prompt language, ``masks`` the a* mask maths, ``gate`` the
identity gate and its face recogniser, ``folder`` the batch over a hospital folder
(photos, ``attributes.csv``, manifest, resume) and ``report`` its contact sheet. Nothing here
imports the phantom world unless the phantom preset's model is loaded.
"""

from deid_client.firewall.config import FirewallConfig, ModelConfig, compose_firewall, published_edit
from deid_client.firewall.folder import Photo, folder_photos, read_manifest, run_folder
from deid_client.firewall.pipeline import Firewall, Result

__all__ = ["Firewall", "Result", "FirewallConfig", "ModelConfig", "compose_firewall", "published_edit",
           "Photo", "folder_photos", "read_manifest", "run_folder"]
