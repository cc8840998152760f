"""The research mask sources (research/mask_sources.py), which the product never trains on."""

import numpy as np
import pytest

from deid_client.phantom import make_phantom
from deid_client.task.data import Sample
from research.mask_sources import SOURCES
from tests.runconfig import data_settings


def test_mask_sources_differ_as_designed():
    p = make_phantom(4, 192)
    sample = [Sample(p.image, p.mask, None, "p", p.twin)]
    config = data_settings(mask_source="oracle")
    (oracle,), (naive,), (truth,) = (SOURCES[name](sample, config)[1]
                                     for name in ("oracle", "naive", "truth"))
    assert np.array_equal(truth, p.mask)
    assert (oracle & p.mask).sum() / (oracle | p.mask).sum() > 0.85
    assert (naive & p.mask).sum() / (naive | p.mask).sum() < 0.5
    with pytest.raises(ValueError, match="mask-source"):
        data_settings(mask_source="magic")
