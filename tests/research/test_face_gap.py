"""The face-gap proxy: its FedAvg is the server's, its lesion mix keeps the labels."""

import numpy as np
import pytest

from deid_client.task.segmentation import build_unet, round_lr, score, train_epochs
from research.face_gap import Standardised, fedavg, lesion_mix, sites, study_run_config


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    run = study_run_config("data.seed=0", "data.non_iid=0.8", "simulation.num_clients=2",
                           "data.images_per_client=8", "simulation.rounds=2", "segmentation.local_epochs=1")
    return run, sites(run, 2, tmp_path_factory.mktemp("cache"))


def test_two_alike_sites_average_to_one_site_trained_alone(cell):
    """Examples-weighted FedAvg of two sites with the same pairs is that site trained alone,
    round by round, to the bit."""
    run, (site, _) = cell
    pairs = (site.images, site.masks)
    held = (site.eval_images, site.eval_masks)
    curve = fedavg(build_unet(seed=0), [pairs, pairs], run, {"held": [(*held, site.originals)]})
    alone = build_unet(seed=0)
    for server_round in (1, 2):
        train_epochs(alone, *pairs, epochs=1, batch_size=int(run["batch-size"]), seed=server_round,
                     lr=round_lr(float(run["lr"]), server_round, 2))
    assert curve[-1]["held"] == score(alone, *held)["dice"]


def test_a_mixed_lesion_keeps_its_mask_on_another_face(cell):
    run, (site, _) = cell
    images, masks = lesion_mix(site, 5.0, np.random.default_rng(0))
    n = len(site.images)
    assert len(images) == 2 * n and np.array_equal(masks[:n], site.masks)
    assert not any(np.array_equal(images[n + i], site.images[i]) for i in range(n))  # another face
    agree = [(m & s).sum() / max((m | s).sum(), 1) for m, s in zip(masks[n:], site.masks)]
    assert np.mean(agree) >= 0.9  # the same lesion (up to the gamut of the other face)


def test_standardised_photos_ignore_a_change_of_exposure():
    model = Standardised(build_unet(seed=0)).eval()
    x = np.random.default_rng(0).uniform(0.2, 0.6, (2, 3, 64, 64)).astype(np.float32)
    import torch

    out = model(torch.from_numpy(x))
    brighter = model(torch.from_numpy(1.3 * x + 0.1))
    assert torch.allclose(out, brighter, atol=1e-4)


def test_adapted_statistics_are_the_sites_own(cell):
    """AdaBN: the copy's BatchNorm statistics are the site photos' (the first layer's mean is
    the photos' mean response exactly), the federation's model is untouched."""
    import torch

    from deid_client.task.data import phantom_samples
    from research.face_gap import _config, adapted

    run, (site, _) = cell
    model = build_unet(seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    local = adapted(model, site.originals)
    x = torch.from_numpy(site.originals).permute(0, 3, 1, 2).float() / 255
    first = local.encoder.bn1
    with torch.no_grad():
        response = local.encoder.conv1(x)
    assert torch.allclose(first.running_mean, response.mean(dim=(0, 2, 3)), atol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # the site's photos: its training split's originals, then its held-out ones
    partition = phantom_samples(_config(run, 0, 2))
    assert np.array_equal(np.concatenate([site.originals, site.eval_images]), [p.image for p in partition])
