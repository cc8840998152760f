import numpy as np
import pytest
import torch

from deid_client.editing.flowedit import check_schedule, flowedit
from deid_client.editing.schedules import flux_sigmas, sd3_sigmas
from deid_client.editing.seeds import image_generator, image_key, image_seed

SHAPE = (1, 4, 8, 8)


def gaussian_velocity(mu: torch.Tensor, s: float):
    """Exact velocity field of N(mu, s^2 I) under z_t = (1 - t) x0 + t eps (float64)."""
    def v(z: torch.Tensor, t: float) -> torch.Tensor:
        q = (1 - t) ** 2 * s**2 + t**2
        return (((t - (1 - t) * s**2) / q) * (z.double() - (1 - t) * mu) - mu).to(z.dtype)
    return v


def nonlinear_velocity(seed: int):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.GELU(),
                              torch.nn.Conv2d(8, 4, 3, padding=1))
    return lambda z, t: net(z) * (1 + t)


@pytest.fixture
def x_src() -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))


SCHEDULES = {"sd3-50": lambda: sd3_sigmas(50), "flux-28": lambda: flux_sigmas(28, 4096),
             "uneven": lambda: torch.tensor([1.0, 0.97, 0.6, 0.59, 0.2, 0.0])}


@pytest.mark.parametrize("name", SCHEDULES)
def test_identical_conditioning_leaves_latent_unchanged(x_src, name):
    v = nonlinear_velocity(1)
    sigmas = SCHEDULES[name]()
    steps = len(sigmas) - 1
    out = flowedit(x_src, v, v, sigmas, n_max=steps, n_avg=2,
                   generator=torch.Generator().manual_seed(3))
    assert torch.equal(out, x_src)


@pytest.mark.parametrize("name", SCHEDULES)
def test_gaussian_edit_is_exact_shift_of_means(x_src, name):
    g = torch.Generator().manual_seed(5)
    mu_s = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    mu_t = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    sigmas = SCHEDULES[name]()
    out = flowedit(x_src, gaussian_velocity(mu_s, 0.7), gaussian_velocity(mu_t, 0.7), sigmas,
                   n_max=len(sigmas) - 1, generator=torch.Generator().manual_seed(9))
    expected = x_src.double() + mu_t - mu_s
    torch.testing.assert_close(out.double(), expected, atol=2e-5, rtol=0)


@pytest.mark.parametrize("n_max", [1, 10, 33])
def test_partial_window_follows_the_difference_recursion(x_src, n_max):
    """Started below t = 1 the edit is x_src + c * (mu_t - mu_s), c from a scalar recursion."""
    g = torch.Generator().manual_seed(6)
    mu_s, mu_t = (torch.randn(SHAPE, generator=g, dtype=torch.float64) for _ in range(2))
    s = 0.8
    sigmas = sd3_sigmas(50)
    out = flowedit(x_src, gaussian_velocity(mu_s, s), gaussian_velocity(mu_t, s), sigmas,
                   n_max=n_max, generator=torch.Generator().manual_seed(1))
    ts = sigmas.double().tolist()
    c = 0.0  # Delta_i = c_i * d with d = mu_t - mu_s
    for i in range(50 - n_max, 50):
        t = ts[i]
        k = (t - (1 - t) * s**2) / ((1 - t) ** 2 * s**2 + t**2)
        c = c + (ts[i + 1] - t) * (k * (c - (1 - t)) - 1)
    torch.testing.assert_close(out.double(), x_src.double() + c * (mu_t - mu_s), atol=2e-5, rtol=0)
    assert 0 < c < 1


def test_seed_decides_the_noise(x_src):
    v_src, v_tgt = nonlinear_velocity(1), nonlinear_velocity(2)
    sigmas = sd3_sigmas(10)

    def run(seed):
        return flowedit(x_src, v_src, v_tgt, sigmas, n_max=8, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(4), run(4))
    assert not torch.allclose(run(4), run(5))


def test_each_row_keeps_its_own_noise_stream():
    """With one generator per row, a row's edit is the one it gets alone, whatever else is in
    the batch (the velocity treats rows independently, so this holds to the bit)."""
    v_src, v_tgt = nonlinear_velocity(1), nonlinear_velocity(2)
    rows = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    seeds = [7, 8, 7]  # rows 0 and 2 share a seed: the same noise, as a photo and its healed copy

    def run(x, seeds):
        return flowedit(x, v_src, v_tgt, sd3_sigmas(10), n_max=8, n_avg=2,
                        generator=[torch.Generator().manual_seed(s) for s in seeds])

    batch = run(rows, seeds)
    for i, seed in enumerate(seeds):
        alone = flowedit(rows[i:i + 1], v_src, v_tgt, sd3_sigmas(10), n_max=8, n_avg=2,
                         generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(batch[i:i + 1], alone, rtol=0, atol=1e-6)
    assert not torch.allclose(run(rows, [7, 7, 7])[1], batch[1])
    with pytest.raises(ValueError, match="2 generators for a batch of 3"):
        run(rows, [1, 2])


def test_call_counts_and_pair_evaluation(x_src):
    calls = {"src": 0, "tgt": 0, "pair": 0}
    v = nonlinear_velocity(1)

    def counted(name, fn):
        def wrapped(*args):
            calls[name] += 1
            return fn(*args)
        return wrapped

    pair = counted("pair", lambda zs, zt, t: (v(zs, t), v(zt, t) + 1))
    flowedit(x_src, counted("src", v), counted("tgt", v), sd3_sigmas(12), n_max=7, n_min=2,
             n_avg=3, v_pair=pair)
    assert calls == {"src": 0, "tgt": 2, "pair": (7 - 2) * 3}
    calls.update(src=0, tgt=0, pair=0)
    flowedit(x_src, counted("src", v), counted("tgt", v), sd3_sigmas(12), n_max=7, n_avg=2)
    assert calls == {"src": 14, "tgt": 14, "pair": 0}


def test_tail_with_n_min_samples_the_target(x_src):
    """With n_min > 0 the last steps sample the target: a Gaussian target's mean is reached."""
    mu_t = torch.full(SHAPE, 3.0, dtype=torch.float64)
    v = gaussian_velocity(torch.zeros(SHAPE, dtype=torch.float64), 0.01)
    out = flowedit(x_src, v, gaussian_velocity(mu_t, 0.01), sd3_sigmas(20), n_max=15, n_min=5,
                   generator=torch.Generator().manual_seed(0))
    assert abs(out.mean().item() - 3.0) < 0.1 and out.std().item() < 0.1


def test_keeps_model_dtype_and_edits_in_float32():
    x = torch.randn(SHAPE).to(torch.bfloat16)
    seen = []

    def v(z, t):
        seen.append(z.dtype)
        return z * 0.5

    out = flowedit(x, v, lambda z, t: z * 0.25, sd3_sigmas(5), n_max=3)
    assert out.dtype == torch.bfloat16 and set(seen) == {torch.bfloat16}


@pytest.mark.parametrize("kwargs, message", [
    ({"n_max": 6}, "n_max"), ({"n_max": 2, "n_min": 3}, "n_min"), ({"n_max": 2, "n_avg": 0}, "n_avg"),
])
def test_bad_arguments(x_src, kwargs, message):
    with pytest.raises(ValueError, match=message):
        flowedit(x_src, lambda z, t: z, lambda z, t: z, sd3_sigmas(5), **kwargs)


def test_schedule_checks():
    assert check_schedule([1.0, 0.5, 0.0]) == [1.0, 0.5, 0.0]
    for bad, message in (([1.0, 0.5], "end at 0"), ([1.0, 1.0, 0.0], "descending"),
                         ([2.0, 0.0], "start"), ([0.0], "two")):
        with pytest.raises(ValueError, match=message):
            check_schedule(bad)


def test_schedules_match_the_published_recipes():
    sd3 = sd3_sigmas(50)
    assert len(sd3) == 51 and sd3[0] == 1 and sd3[-1] == 0
    # SD3: shift 3 applied to an even grid from 1 down to the shifted training minimum
    def shift(x):
        return 3 * x / (1 + 2 * x)

    t = np.linspace(1.0, shift(1 / 1000), 50)
    np.testing.assert_allclose(sd3[:-1].numpy(), shift(t), atol=1e-6)
    flux = flux_sigmas(28, 4096)
    assert len(flux) == 29 and flux[0] == 1 and flux[-1] == 0
    base = np.linspace(1, 1 / 28, 28)
    mu = 1.15  # max shift at the maximum sequence length
    np.testing.assert_allclose(flux[:-1].numpy(), np.exp(mu) / (np.exp(mu) + (1 / base - 1)), atol=1e-5)
    assert (flux_sigmas(28, 256)[1:-1] < flux[1:-1]).all()  # smaller images shift less


def test_seeds_are_per_image_and_order_free():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 1
    ka, kb = image_key(a), image_key(b)
    assert ka != kb and ka == image_key(a.copy())
    assert image_seed(7, ka) == image_seed(7, ka) != image_seed(8, ka)
    first = torch.randn(3, generator=image_generator(7, ka))
    torch.randn(100, generator=image_generator(7, kb))  # another image in between
    assert torch.equal(first, torch.randn(3, generator=image_generator(7, ka)))
