"""FlowEdit backends on tiny, real diffusers pipelines (random weights, CPU)."""

import json

import numpy as np
import pytest
import torch

from deid_client.editing.backends import ModelConfig, ModelNotFoundError, backend_for, load_backend
from deid_client.cli import main
from deid_client.editing.flowedit import flowedit
from deid_client.firewall.config import published_edit
from deid_client.io.images import read_image, write_image
from deid_client.phantom import make_phantom
from research.tiny_pipelines import save_tiny_pipeline, tiny_flux_pipeline, tiny_sd3_pipeline
from tests.metadata import metadata_in

SRC = "a photo of a woman with erythema"
TGT = "a photo of a man with erythema"
BUILDERS = {"sd3": tiny_sd3_pipeline, "flux": tiny_flux_pipeline}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def backend(request):
    return backend_for(BUILDERS[request.param](), max_sequence_length=16)


@pytest.fixture(scope="module")
def image():
    return make_phantom(0, 96).image[:80]  # 80 x 96: not square, multiple of 16


class TransformerCalls:
    """Records every transformer forward: batch size, timesteps, guidance."""

    def __init__(self, backend):
        self.calls = []
        self.handle = backend.pipe.transformer.register_forward_hook(self.record, with_kwargs=True)

    def record(self, module, args, kwargs, output):
        guidance = kwargs.get("guidance")
        self.calls.append({"batch": kwargs["hidden_states"].shape[0],
                           "timestep": kwargs["timestep"].tolist(),
                           "guidance": None if guidance is None else guidance.tolist()})

    def __enter__(self):
        return self.calls

    def __exit__(self, *exc):
        self.handle.remove()


def test_identical_conditioning_is_exact_through_real_models(backend, image):
    settings = published_edit(backend.family, "a face", "a face", steps=10, n_max=7, gamma_src=4.0,
                                gamma_tgt=4.0)
    x = backend._to_model_space(backend.encode_images([image], (80, 96)))
    v_src, v_tgt, v_pair = backend.velocities([settings], (80, 96))
    z = flowedit(x, v_src, v_tgt, backend.sigmas(10, x), n_max=7, v_pair=v_pair,
                 generator=torch.Generator().manual_seed(0))
    assert torch.equal(z, x)


@pytest.mark.parametrize("n_max, n_avg", [(7, 1), (4, 2)])
def test_one_batched_transformer_call_per_sample_and_step(backend, image, n_max, n_avg):
    settings = published_edit(backend.family, SRC, TGT, steps=10, n_max=n_max, n_avg=n_avg)
    with TransformerCalls(backend) as calls:
        out = backend.edit(image, settings)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert len(calls) == n_max * n_avg
    assert {c["batch"] for c in calls} == {4 if backend.family == "sd3" else 2}
    sigmas = backend.sigmas(10, backend._to_model_space(backend.encode_images([image], (80, 96))))
    scale = 1000.0 if backend.family == "sd3" else 1.0  # SD3 gets 0..1000, FLUX gets t
    first = [c["timestep"][0] for c in calls[::n_avg]]
    np.testing.assert_allclose(first, (sigmas[10 - n_max:10] * scale).tolist(), rtol=1e-6)
    if backend.family == "flux":
        assert calls[0]["guidance"] == [settings.gamma_src, settings.gamma_tgt]


@pytest.mark.parametrize("gamma_src, gamma_tgt, rows", [(4.0, 4.0, 4), (1.0, 4.0, 3), (1.0, 1.0, 2)])
def test_a_side_at_guidance_one_runs_its_conditional_rows_only(image, gamma_src, gamma_tgt, rows):
    """u + 1 (c - u) is c: an unguided side skips its unconditional evaluation, and its
    velocity is the conditional one that the guided formula gives at gamma 1."""
    backend = backend_for(tiny_sd3_pipeline(), max_sequence_length=16)
    settings = published_edit(backend.family, SRC, TGT, steps=10, n_max=7, gamma_src=gamma_src,
                              gamma_tgt=gamma_tgt)
    x = backend._to_model_space(backend.encode_images([image] * 2, (80, 96)))
    z = x + torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    with TransformerCalls(backend) as calls:
        pair = backend.velocities([settings] * 2, (80, 96))[2](z, z + 1, 0.6)
    assert [c["batch"] for c in calls] == [2 * rows]
    guided = backend.velocities([settings.with_overrides(gamma_src=4.0, gamma_tgt=4.0)] * 2, (80, 96))
    transformer = backend.pipe.transformer
    for side, (v, gamma, prompt, latent) in enumerate([(guided[0], gamma_src, SRC, z),
                                                        (guided[1], gamma_tgt, TGT, z + 1)]):
        embeds, pooled = backend.embedding(prompt).embeds, backend.embedding(prompt).pooled
        c = transformer(hidden_states=latent, encoder_hidden_states=embeds.expand(2, -1, -1),
                        pooled_projections=pooled.expand(2, -1), timestep=torch.full((2,), 600.0),
                        return_dict=False)[0]
        expected = c if gamma == 1 else v(latent, 0.6)
        torch.testing.assert_close(pair[side], expected, rtol=1e-5, atol=1e-5)


def test_schedules_are_the_families(backend):
    x = torch.zeros(1, 48, 64) if backend.family == "flux" else torch.zeros(1, 4, 8, 8)
    sigmas = backend.sigmas(28, x)
    assert sigmas[0] == 1.0 and sigmas[-1] == 0.0 and len(sigmas) == 29
    assert published_edit(backend.family, SRC, TGT).steps == (50 if backend.family == "sd3" else 28)


def test_seed_and_key_decide_the_result(backend, image):
    settings = published_edit(backend.family, SRC, TGT, steps=6, n_max=4)
    a = backend.edit(image, settings)
    other = make_phantom(1, 96).image[:80]
    backend.edit(other, settings)  # another image in between changes nothing
    assert np.array_equal(a, backend.edit(image, settings))
    assert not np.array_equal(a, backend.edit(image, settings.with_overrides(seed=1)))
    assert not np.array_equal(a, backend.edit(image, settings, key="another-key"))


def test_prompts_are_encoded_once(backend, image, monkeypatch):
    encoded = []
    original = backend._encode_prompt
    monkeypatch.setattr(backend, "_encode_prompt", lambda text: encoded.append(text) or original(text))
    backend._embeddings.clear()
    settings = published_edit(backend.family, SRC, TGT, steps=4, n_max=2)
    backend.edit(image, settings)
    backend.edit(image[::-1].copy(), settings)
    assert sorted(encoded) == sorted(set(encoded)) and SRC in encoded and TGT in encoded


def test_any_size_comes_back_at_input_size(backend):
    odd = make_phantom(2, 96).image[5:75, 3:93]  # 70 x 90
    settings = published_edit(backend.family, SRC, TGT, steps=4, n_max=2, max_side=64)
    assert backend.edit(odd, settings).shape == odd.shape


def test_free_text_encoders_keeps_cached_prompts(image):
    backend = backend_for(tiny_sd3_pipeline(), max_sequence_length=16)
    backend.free_text_encoders("", SRC, TGT)
    assert backend.pipe.text_encoder is None and backend.pipe.text_encoder_3 is None
    settings = published_edit(backend.family, SRC, TGT, steps=4, n_max=2)
    assert backend.edit(image, settings).shape == image.shape
    with pytest.raises(ValueError, match="freed"):
        backend.edit(image, published_edit(backend.family, SRC, "a new prompt", steps=4, n_max=2))


def test_flux_schnell_has_no_guidance_input(image):
    backend = backend_for(tiny_flux_pipeline(guidance_embeds=False), max_sequence_length=16)
    with TransformerCalls(backend) as calls:
        backend.edit(image, published_edit(backend.family, SRC, TGT, steps=4, n_max=3))
    assert len(calls) == 3 and all(c["guidance"] is None for c in calls)


# --- loading and the CLI ---------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {kind: save_tiny_pipeline(kind, root / kind) for kind in BUILDERS}


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_edit_cli_end_to_end(saved, kind, tmp_path, capsys):
    source = tmp_path / "in.png"
    write_image(source, make_phantom(3, 96).image[:70, :90])
    out = tmp_path / "out.png"
    code = main(["edit", str(source), "--model", str(saved[kind]), "--source-prompt", SRC,
                 "--target-prompt", TGT, "-o", str(out), "--steps", "6", "--n-max", "4",
                 "--seed", "3", "--max-sequence-length", "16"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["family"] == kind and result["settings"]["seed"] == 3
    edited = read_image(out)
    assert edited.shape == (70, 90, 3) and metadata_in(out.read_bytes()) == []


def test_loaded_backend_matches_in_memory_pipeline(saved, image):
    loaded = load_backend(ModelConfig(str(saved["sd3"]), max_sequence_length=16))
    fresh = backend_for(tiny_sd3_pipeline(), max_sequence_length=16)
    settings = published_edit(fresh.family, SRC, TGT, steps=5, n_max=3)
    assert np.array_equal(loaded.edit(image, settings), fresh.edit(image, settings))


@pytest.mark.parametrize("model, message", [
    ("stabilityai/stable-diffusion-3.5-medium", "hf download stabilityai/stable-diffusion-3.5-medium"),
    ("black-forest-labs/FLUX.1-dev", "not on this machine"),
    ("./no/such/folder", "no such model folder"),
])
def test_missing_model_is_one_clear_line(model, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelNotFoundError, match=message):
        load_backend(ModelConfig(str(model)))
    source = tmp_path / "in.png"
    write_image(source, np.zeros((32, 32, 3), np.uint8))
    code = main(["edit", str(source), "--model", model, "--source-prompt", "a", "--target-prompt",
                 "b", "-o", str(tmp_path / "out.png")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "out.png").exists()


def test_folder_that_is_not_a_pipeline(tmp_path):
    with pytest.raises(ModelNotFoundError, match="model_index.json"):
        load_backend(ModelConfig(str(tmp_path)))
