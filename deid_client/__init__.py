"""deid-client: a local privacy firewall for federated dermatology segmentation.

Each hospital turns patient photos into synthetic surrogates, derives erythema
masks from surrogate / healthy-twin pairs, and trains a segmentation model whose
weights alone leave the site. ``docs/design.md`` maps the package.
"""

__version__ = "0.1.0"
