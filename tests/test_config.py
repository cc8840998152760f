import pytest

from deid_client.firewall.config import compose_firewall, published_edit

#: Each real model's preset and the family whose published FlowEdit defaults it edits with.
FAMILIES = {"sd3_medium": "sd3", "sd35_medium": "sd3", "sd35_large": "sd3", "flux_dev": "flux"}
SCHEDULE = ("steps", "n_max", "n_min", "n_avg", "gamma_src", "gamma_tgt")


@pytest.mark.parametrize("preset", sorted(FAMILIES))
def test_each_real_preset_edits_with_its_models_published_defaults(preset):
    cfg = compose_firewall([f"preset={preset}"])
    assert cfg.model.allow_download is False  # offline unless asked
    published = published_edit(FAMILIES[preset], "a", "b")
    assert {k: getattr(cfg.identity, k) for k in SCHEDULE} == {k: getattr(published, k) for k in SCHEDULE}


def test_published_defaults_are_the_papers_and_overrides_win():
    sd3, flux = published_edit("sd3", "a", "b"), published_edit("flux", "a", "b", n_max=20)
    assert (sd3.steps, sd3.n_max, sd3.gamma_src, sd3.gamma_tgt) == (50, 33, 3.5, 13.5)
    assert (flux.steps, flux.n_max, flux.gamma_src, flux.gamma_tgt) == (28, 20, 1.5, 5.5)
    assert (flux.source_prompt, flux.target_prompt) == ("a", "b")
    assert published_edit("phantom", "a", "b").steps == compose_firewall().identity.steps
    with pytest.raises(ValueError, match="no published FlowEdit defaults for model family 'dalle'"):
        published_edit("dalle", "a", "b")


def test_config_mistakes_are_errors(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("identity:\n  n_maxx: 3\n")
    with pytest.raises(ValueError, match="config 'firewall': Key 'n_maxx' is not in struct"):
        compose_firewall(None, site)  # a site file's unknown key: one line, no traceback
    with pytest.raises(ValueError, match="config 'identity'"):
        compose_firewall(["identity.steps=many"])
    with pytest.raises(ValueError, match="no such firewall config file"):
        compose_firewall(None, tmp_path / "missing.yaml")


def test_a_site_file_sits_between_the_defaults_and_the_command_line(tmp_path):
    """The site's YAML overrides the shipped defaults and its preset; the command line,
    read with Hydra's grammar, overrides the site's file."""
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
    with pytest.raises(ValueError, match="0 <= n_min <= n_max <= steps, not n_min=6, n_max=0"):
        compose_firewall(["identity.n_max=0"])  # the default level samples the last 6 steps
    assert compose_firewall(["identity.n_max=0", "identity.n_min=0"]).identity.n_max == 0


def test_a_deleting_override_is_a_config_error_naming_the_key():
    """Hydra's '~key' removes a setting; the firewall has no default for one, so it says
    which (before, OmegaConf's struct flag raised its own traceback)."""
    with pytest.raises(ValueError, match=r"config 'firewall': missing keys \['theta'\]"):
        compose_firewall(["~theta"])
    with pytest.raises(ValueError, match="config 'identity'.*steps"):
        compose_firewall(["~identity.steps"])


def test_a_real_preset_never_imports_the_phantom_world():
    """A site with SD3 composes its firewall and builds the Firewall around its model without
    the phantom renderer or the phantom model on its import path."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from deid_client.firewall import Firewall, compose_firewall, run_folder\n"
            "from deid_client import client_app, cli\n"
            "cfg = compose_firewall(['preset=sd35_medium'])\n"
            "Firewall(cfg, backend=None).identity_edit('a photo of a man, with red facial erythema')\n"
            "print(sorted(m for m in sys.modules if m.startswith(('deid_client.phantom', 'research'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
