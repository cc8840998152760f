"""The update-inversion attack on a small case: the replay is the site's training exactly;
the positive control (one photo, one step) rebuilds its patient; trained on a surrogate,
the update gives back the surrogate, not the patient."""

import numpy as np
import pytest
import torch

from deid_client.editing.backends import load_backend
from deid_client.firewall import Firewall
from deid_client.firewall.config import compose_firewall
from deid_client.phantom import render_phantom, sample_identity, sample_lesion
from deid_client.phantom.language import attributes_of
from deid_client.task.segmentation import build_unet, to_tensors
from research.reid import photo_sessions
from research.learned_inversion import ServerPhotos, learned_invert, server_phantoms, simulate, train_inverter
from research.update_inversion import LocalTraining, image_scores, replay, site_update


@pytest.mark.parametrize("epochs,n,tolerance", [(1, 1, 1e-5), (2, 3, 2e-2)])
def test_the_replay_is_the_sites_training_exactly(epochs, n, tolerance):
    """Same shuffles, augmentation draws, loss and Adam steps: the replayed update and
    BatchNorm statistics are what ``train_epochs`` returned, up to float rounding. Adam
    divides each gradient by its own size, so rounding in a near-zero gradient moves its
    parameter by up to a step: after 4 steps the update differs by 0.5% (relative L2)."""
    model = build_unet("resnet18", 3, seed=0)
    photos, masks, _ = server_phantoms(np.random.default_rng(1), n)
    training = LocalTraining(n_images=n, epochs=epochs, batch_size=2, lr=0.002, seed=3)
    observed = site_update(model, photos, masks, training)
    update, running = replay(model, observed.sent, *to_tensors(photos, masks), training, create_graph=False)
    replayed = torch.cat([update[k].detach().flatten() for k in update])
    returned = torch.cat([(observed.returned[k] - observed.sent[k]).flatten() for k in update])
    assert (replayed - returned).norm() / returned.norm() < tolerance
    for key, value in running.items():  # the statistics moved, and to where the site's moved
        moved = (observed.returned[key] - observed.sent[key]).abs().max()
        assert moved > 0 and (value.detach() - observed.returned[key]).abs().max() < 1e-3 * moved


@pytest.mark.timeout(240)
def test_the_positive_control_rebuilds_its_patient_and_a_surrogate_update_its_surrogate():
    model = build_unet("resnet18", 3, seed=0)
    training = LocalTraining(n_images=1, epochs=1, batch_size=4, lr=0.002, seed=1)
    inverter = train_inverter(simulate(model, training, server_phantoms, 500, seed=5), epochs=20)
    sessions, people = photo_sessions(4, 1, size=64, seed=0)
    photos = np.stack([s[0].image for s in sessions])
    masks = np.stack([s[0].mask for s in sessions])
    rebuilt = np.stack([learned_invert(inverter, site_update(model, photos[[i]], masks[[i]], training),
                                       training)[0][0] for i in range(4)])
    ssim = np.array([[image_scores(r, p)[1] for p in photos] for r in rebuilt])
    # each reconstruction is nearer its own patient than the others on average, and near it
    others = (ssim.sum(axis=1) - ssim.diagonal()) / 3
    assert (ssim.diagonal() > others).all() and ssim.diagonal().mean() > 0.5, ssim.round(2)

    cfg = compose_firewall([])
    made = Firewall(cfg, load_backend(cfg.model))(list(photos), [attributes_of(p) for p in people])
    from_surrogates = [learned_invert(inverter, site_update(model, r.surrogate[None], r.mask[None], training),
                                      training)[0][0] for r in made]
    to_surrogate = [image_scores(x, r.surrogate)[1] for x, r in zip(from_surrogates, made)]
    to_patient = [image_scores(x, p)[1] for x, p in zip(from_surrogates, photos)]
    assert np.mean(to_surrogate) > np.mean(to_patient), (to_surrogate, to_patient)


def test_the_generative_prior_renders_the_person_it_reads():
    """What the prior inverter reads (numbers and choices) renders back the phantom: the
    person without a lesion, jewellery, and with a fixed texture seed."""
    from dataclasses import replace

    from research.prior_inversion import identity_vector, render

    rng = np.random.default_rng(4)
    for _ in range(3):
        person = sample_identity(rng)
        numbers, choices = identity_vector(person)
        base = sample_identity(np.random.default_rng(0), sex=person.sex, distractors=False)
        same = replace(person, jewellery=(), texture_seed=base.texture_seed, skin_type=base.skin_type)
        expected = render_phantom(same, sample_lesion(np.random.default_rng(0), "none"), 64).image
        assert np.array_equal(render(np.array(numbers), choices), expected)


def test_principal_directions_are_the_svds_up_to_sign():
    from research.prior_inversion import principal_directions

    z = torch.randn(40, 300, generator=torch.Generator().manual_seed(0))
    for samples in (z, z[:, :30]):  # fewer samples than features (the Gram route), and more
        got = principal_directions(samples, 10)
        expected = torch.linalg.svd(samples, full_matrices=False).Vh[:10].T
        assert torch.allclose((got * expected).sum(0).abs(), torch.ones(10), atol=1e-4)


@pytest.mark.timeout(120)
def test_simulated_rounds_do_not_depend_on_the_workers():
    """Each round draws from its own generator: two processes give the rounds one gives
    (the photos exactly; the updates but for the signs of a few near-zero gradients: one
    torch thread rounds differently from two, and Adam's first step is nearly the sign of
    the gradient, as in the replay test), and the server's photos include new sessions of
    the people it knows."""
    model = build_unet("resnet18", 3, seed=0)
    training = LocalTraining(n_images=1, epochs=1, batch_size=4, lr=0.002, seed=1)
    _, people = photo_sessions(3, 1, size=64, seed=0)
    photos = ServerPhotos(tuple(people), share=0.5)
    one, two = (simulate(model, training, photos, 6, seed=2, workers=w) for w in (1, 2))
    assert np.array_equal(one.images, two.images) and np.array_equal(one.masks, two.masks)
    assert np.mean(np.abs(one.features - two.features) > 1e-3) < 1e-3
    known = {p.texture_seed for p in people}
    assert 0 < sum(p.texture_seed in known for p in one.people[:, 0]) < 6


def test_the_inverted_gallery_names_by_nearest_reconstruction_alone_or_pooled():
    """Nearest neighbour among the server's own reconstructions, as scores (so it pools a
    site's K reconstructions like the photo attackers): each probe is named after its
    nearest gallery image; a group whose views lean to different patients is named after
    the one that is nearest on average."""
    from research.learned_inversion import InvertedGalleryAttacker

    rng = np.random.default_rng(0)
    gallery = rng.integers(0, 256, (6, 8, 8, 3)).astype(np.uint8)
    attacker = InvertedGalleryAttacker(gallery, np.array([0, 0, 1, 1, 2, 2]))
    assert list(attacker.identify(gallery[[5, 0, 3]])) == [2, 0, 1]
    # two views, each an even blend leaning slightly to a different wrong patient, both nearer 1
    near = lambda a, b, w: (w * gallery[a].astype(float) + (1 - w) * gallery[b]).astype(np.uint8)  # noqa: E731
    views = np.stack([near(0, 2, 0.52), near(4, 2, 0.52)])
    assert list(attacker.identify(views)) == [0, 2]
    assert list(attacker.identify_pooled(views[None])) == [1]


def _every_order(costs_of_order, n: int) -> torch.Tensor:
    """The brute-force set loss: per sample the least mean cost over all n! orders."""
    import itertools

    orders = itertools.permutations(range(n))
    return torch.stack([costs_of_order(list(p)) for p in orders]).min(0).values.mean()


def test_the_set_losses_pair_by_hungarian_exactly_as_over_every_order():
    """The inverters' set losses pair a site's outputs with its photos (or people) by the
    Hungarian method: the same value and gradient as the minimum over all n! orders."""
    from research.learned_inversion import _set_loss
    from research.prior_inversion import CHOICES, PriorInverter, Projection

    torch.manual_seed(0)
    n = 4
    out = torch.randn(6, n, 4, 8, 8, requires_grad=True)
    images, masks = torch.rand(6, n, 3, 8, 8), (torch.rand(6, n, 8, 8) > 0.7).float()

    def pixels(order):
        o = out[:, order]
        bce = torch.nn.functional.binary_cross_entropy_with_logits(o[:, :, 3], masks, reduction="none")
        return (o[:, :, :3] - images).pow(2).mean(dim=(1, 2, 3, 4)) + 0.1 * bce.mean(dim=(1, 2, 3))

    fast, slow = _set_loss(out, images, masks), _every_order(pixels, n)
    assert fast.item() == pytest.approx(slow.item(), rel=1e-5)
    (g_fast,), (g_slow,) = torch.autograd.grad(fast, out), torch.autograd.grad(slow, out)
    assert torch.allclose(g_fast, g_slow, atol=1e-6)

    n_numbers = 5
    net = PriorInverter(Projection(3, 2), n, n_numbers)
    out = torch.randn(6, n, net.width, requires_grad=True)
    numbers = torch.randn(6, n, n_numbers)
    choices = torch.stack([torch.randint(len(v), (6, n)) for v in CHOICES.values()], dim=2)

    def people(order):
        o = out[:, order]
        error, at = (o[..., :n_numbers] - numbers).pow(2).mean(dim=(1, 2)), n_numbers
        for j, values in enumerate(CHOICES.values()):
            error = error + 0.3 * torch.nn.functional.cross_entropy(
                o[..., at:at + len(values)].reshape(-1, len(values)), choices[..., j].reshape(-1),
                reduction="none").view(len(o), -1).mean(1)
            at += len(values)
        return error

    fast, slow = net.loss(out, numbers, choices), _every_order(people, n)
    assert fast.item() == pytest.approx(slow.item(), rel=1e-5)
    (g_fast,), (g_slow,) = torch.autograd.grad(fast, out), torch.autograd.grad(slow, out)
    assert torch.allclose(g_fast, g_slow, atol=1e-6)
