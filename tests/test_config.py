import pytest
from omegaconf import OmegaConf

from deid_client.editing.backends import FluxBackend, PhantomBackend, SD3Backend
from deid_client.firewall.config import compose_edit, edit_config

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


def test_a_site_file_sits_between_the_defaults_and_the_command_line(tmp_path):
    """The site's YAML overrides the shipped defaults and its preset; the command line,
    read with Hydra's grammar, overrides the site's file."""
    from deid_client.firewall.config import compose_firewall

    site = tmp_path / "site.yaml"
    site.write_text("theta: 3.0\nidentity:\n  n_max: 6\ngate:\n  retries: 5\n"
                    "prompts:\n  condition: with acne\n")
    cfg = compose_firewall(["theta=4.5", "preset=phantom", "prompts.condition='with mild, red acne'"],
                            site)
    assert cfg.theta == 4.5 and cfg.prompts.condition == "with mild, red acne"
    assert cfg.identity.n_max == 6 and cfg.gate.retries == 5
    assert compose_firewall(None, site).theta == 3.0
    assert compose_firewall().identity.n_max != 6  # the shipped default is not the site's


def test_privacy_levels_set_their_measured_settings_and_explicit_ones_win(tmp_path):
    from deid_client.firewall.config import compose_firewall

    low, medium, high = (compose_firewall([f"privacy={level}"]) for level in ("low", "medium", "high"))
    assert compose_firewall() == high and high.privacy == "high"  # the phantom preset's default
    assert (low.lesion, low.identity.n_min) == ("edited", 0)
    assert (medium.lesion, medium.identity.n_min) == ("carried", 5)
    assert (high.lesion, high.identity.n_min) == ("carried", 6)
    assert (medium.identity.steps, medium.identity.gamma_tgt, medium.twin) == (
        low.identity.steps, low.identity.gamma_tgt, low.twin)  # nothing else moves
    assert compose_firewall(["privacy=high", "identity.n_min=3"]).identity.n_min == 3
    site = tmp_path / "site.yaml"
    site.write_text("privacy: medium\n")
    assert compose_firewall(None, site).identity.n_min == 5
    assert compose_firewall(["privacy=low"], site).lesion == "edited"  # command line first
    assert compose_firewall(["preset=sd35_medium"]).privacy == "low"  # all a real preset has
    with pytest.raises(ValueError, match="privacy level 'high' has no measured settings"):
        compose_firewall(["preset=sd35_medium", "privacy=high"])
    with pytest.raises(ValueError, match="privacy level 'max'"):
        compose_firewall(["privacy=max"])


def test_an_edit_window_outside_its_schedule_is_a_config_error():
    from deid_client.firewall.config import compose_firewall

    with pytest.raises(ValueError, match="0 <= n_min <= n_max <= steps, not n_min=6, n_max=0"):
        compose_firewall(["identity.n_max=0"])  # the default level samples the last 6 steps
    assert compose_firewall(["identity.n_max=0", "identity.n_min=0"]).identity.n_max == 0


def test_a_deleting_override_is_a_config_error_naming_the_key():
    """Hydra's '~key' removes a setting; the firewall has no default for one, so it says
    which (before, OmegaConf's struct flag raised its own traceback)."""
    from deid_client.firewall.config import compose_firewall

    with pytest.raises(ValueError, match=r"config 'surrogate': missing keys \['theta'\]"):
        compose_firewall(["~theta"])
    with pytest.raises(ValueError, match="config 'identity'.*steps"):
        compose_firewall(["~identity.steps"])
