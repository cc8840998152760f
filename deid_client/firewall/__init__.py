"""The privacy firewall: patient photos -> synthetic surrogates, healthy twins, erythema masks.

A site with Stable Diffusion 3.5 on disk::

    from deid_client.editing.backends import load_backend
    from deid_client.firewall import Firewall, compose_firewall

    cfg = compose_firewall(["preset=sd35_medium", "model.id=/models/sd35-medium"])
    results = Firewall(cfg, load_backend(cfg.model))(photos)  # one Result per photo

``config`` composes the settings (``conf/``), ``firewall`` is the :class:`Firewall`
itself, ``masks`` the a* mask maths, ``gate`` the
identity gate and its face recogniser, ``folder`` the batch over a hospital folder
(photos, ``attributes.csv``, manifest, resume) and ``report`` its contact sheet. Nothing here
imports the phantom world unless the phantom preset's model is loaded.
"""

from deid_client.firewall.config import FirewallConfig, compose_firewall, published_edit
from deid_client.firewall.folder import Photo, folder_photos, read_manifest, run_folder
from deid_client.firewall.firewall import Firewall, Result

__all__ = ["Firewall", "Result", "FirewallConfig", "compose_firewall", "published_edit",
           "Photo", "folder_photos", "read_manifest", "run_folder"]
