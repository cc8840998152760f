import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from deid_client.cli import main
from deid_client.io.images import read_image, write_image
from tests.metadata import metadata_in


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    assert main(["phantom", "-o", str(root), "-n", "8", "--hospitals", "2", "--size", "96"]) == 0
    return root


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_phantom_writes_a_cohort(cohort):
    manifest = json.loads((cohort / "manifest.json").read_text())
    assert len(manifest["cases"]) == 8 and manifest["hospitals"] == [0, 1]
    for kind in ("images", "healthy", "masks"):
        assert len(list(cohort.glob(f"hospital_*/{kind}/*.png"))) == 8


def test_mask_prints_json_and_writes_files(cohort, tmp_path, capsys):
    case = json.loads((cohort / "manifest.json").read_text())["cases"][0]
    out = tmp_path / "m.png"
    code, stdout, _ = run(capsys, "mask", cohort / case["files"]["images"],
                          cohort / case["files"]["healthy"], "-o", out, "--theta", "4",
                          "--overlay", tmp_path / "o.png", "--heatmap", tmp_path / "h.png")
    assert code == 0
    result = json.loads(stdout)
    mask = read_image(out)[..., 0] > 127
    truth = read_image(cohort / case["files"]["masks"])[..., 0] > 127
    assert result["theta"] == 4.0 and result["lesion_fraction"] == pytest.approx(mask.mean())
    assert (mask & truth).sum() / (mask | truth).sum() > 0.85
    for name in ("m.png", "o.png", "h.png"):
        assert metadata_in((tmp_path / name).read_bytes()) == []


def test_calibrate_on_cohort_and_on_folders(cohort, tmp_path, capsys):
    code, stdout, _ = run(capsys, "calibrate", "--cohort", cohort, "-o", tmp_path / "c.json")
    assert code == 0
    result = json.loads(stdout)
    assert result["images"] == 8 and result["iou"] > 0.9 and 0 < result["theta"] < 12
    assert json.loads((tmp_path / "c.json").read_text()) == result
    assert len(result["per_image_iou"]) == 8

    # Three folders, one bad image and one unmatched file: the rest still calibrate.
    h0 = cohort / "hospital_0"
    folders = [tmp_path / k for k in ("images", "healthy", "masks")]
    for src, dst in zip(("images", "healthy", "masks"), folders):
        shutil.copytree(h0 / src, dst)
    victim = sorted(folders[0].glob("*.png"))[0]
    victim.write_bytes(victim.read_bytes()[:200])
    (folders[1] / "stray.png").write_bytes(b"")
    code, stdout, stderr = run(capsys, "calibrate", *folders)
    n = len(list(folders[2].glob("*.png")))
    assert code == 1 and json.loads(stdout)["images"] == n - 1
    assert victim.name in stderr and "stray" in stderr and "Traceback" not in stderr


def test_ingest_cli(tmp_path, capsys, rng):
    from PIL import Image

    inbox = tmp_path / "in"
    inbox.mkdir()
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(inbox / "jane_doe.jpg")
    (inbox / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nrubbish")
    code, stdout, stderr = run(capsys, "ingest", inbox, "-o", tmp_path / "out",
                               "--secret-file", tmp_path / "site.secret")
    assert code == 1 and "broken.png" in stderr and "1 done, 1 failed" in stderr
    written = list((tmp_path / "out").glob("*.png"))
    assert len(written) == 1 and "jane" not in written[0].name


@pytest.mark.parametrize("argv, message", [
    (["mask", "nope.png", "nope2.png", "-o", "x.png"], "no such file"),
    (["calibrate"], "REFERENCE_DIR"),
    (["phantom", "-o", "x", "--size", "2000"], "64..1024"),
    (["ingest", "missing_dir", "-o", "out", "--secret-file", "s"], "not a folder"),
])
def test_user_mistakes_give_one_line(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    code, _, stderr = run(capsys, *argv)
    assert code == 2
    assert stderr.startswith("deid-client: error: ") and message in stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


def test_mask_of_bad_file_is_one_line(tmp_path, capsys):
    (tmp_path / "a.png").write_bytes(b"not an image")
    code, _, stderr = run(capsys, "mask", tmp_path / "a.png", tmp_path / "a.png", "-o",
                          tmp_path / "m.png")
    assert code == 2 and "not a recognised image format" in stderr
    assert not (tmp_path / "m.png").exists()


def test_console_script_is_installed():
    exe = shutil.which("deid-client") or f"{sys.executable} -m deid_client.cli"
    done = subprocess.run([*exe.split(), "--help"], capture_output=True, text=True, check=True)
    for command in ("phantom", "mask", "calibrate", "ingest"):
        assert command in done.stdout


@pytest.mark.parametrize("output", [".", ".."])
def test_the_firewall_refuses_to_write_into_the_photo_folder(tmp_path, capsys, output):
    """Its masks/ would sit beside the site's reference masks/, and a node would read them
    as the site's own: an output equal to the photo folder, or holding it, is a usage error
    and nothing is written."""
    site = tmp_path / "derm"
    (site / "images").mkdir(parents=True)
    write_image(site / "images" / "a.png", np.zeros((32, 32, 3), np.uint8))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code = main(["firewall", str(site), "-o", str(site / output), "--secret-file", str(tmp_path / "s")])
    assert code == 2 and "must not be the photo folder" in capsys.readouterr().err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
