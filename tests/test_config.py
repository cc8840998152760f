import pytest
from omegaconf import OmegaConf

from deid_client.backends import FluxBackend, PhantomBackend, SD3Backend
from deid_client.config import compose_edit, edit_config

MODELS = {"sd3_medium": SD3Backend, "sd35_medium": SD3Backend, "sd35_large": SD3Backend,
          "flux_dev": FluxBackend, "phantom": PhantomBackend}


@pytest.mark.parametrize("model", sorted(MODELS))
def test_each_model_brings_its_published_defaults(model):
    model_cfg, settings = compose_edit([f"model={model}"])
    assert model_cfg.allow_download is False  # offline unless asked
    for key, value in MODELS[model].defaults.items():
        assert getattr(settings, key) == value, key


def test_default_and_overrides():
    model_cfg, settings = compose_edit()
    assert model_cfg.id == "stabilityai/stable-diffusion-3.5-medium"
    model_cfg, settings = compose_edit(["model=flux_schnell", "flowedit.n_max=2",
                                        "flowedit.target_prompt=a photo of someone else",
                                        "model.dtype=bfloat16"])
    assert model_cfg.id == "black-forest-labs/FLUX.1-schnell" and model_cfg.dtype == "bfloat16"
    assert (settings.steps, settings.n_max, settings.target_prompt) == (4, 2, "a photo of someone else")


def test_config_mistakes_are_errors():
    good = {"id": "x"}
    flowedit = {"source_prompt": "a", "target_prompt": "b", "steps": 10, "n_max": 5,
                "gamma_src": 1.0, "gamma_tgt": 2.0}
    edit_config(OmegaConf.create({"model": good, "flowedit": flowedit}))
    with pytest.raises(ValueError, match="flowedit"):
        edit_config(OmegaConf.create({"model": good, "flowedit": {**flowedit, "n_maxx": 3}}))
    with pytest.raises(ValueError, match="flowedit"):
        edit_config(OmegaConf.create({"model": good, "flowedit": {**flowedit, "steps": "many"}}))
    with pytest.raises(ValueError, match="(?i)flowedit.*missing"):
        edit_config(OmegaConf.create({"model": good, "flowedit": {"source_prompt": "a"}}))
