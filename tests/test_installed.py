"""Installed use: the wheel, in a fresh environment outside the repository, runs the firewall.

The fresh environment borrows the test environment's third-party packages (torch,
diffusers... through a ``.pth`` line; CI has no network for gigabytes of wheels) but not
its editable ``deid_client``: the package, its firewall config and the phantom model
come from the wheel alone.
"""

import json
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from deid_client.firewall import compose_firewall
from tests.test_firewall import hospital_folder

REPO = Path(__file__).resolve().parent.parent
#: What belongs to the lab and must never ship: the phantom model's training loop and
#: samples, research plots and statistics, the research mask sources' branches, the
#: firewall's research-only steps.
LAB_WORDS = (r"render_training_set", r"_with_weights", r"phantom_flow", r"tradeoff_figure",
             r"histogram_figure", r"bhattacharyya", r"ks_statistic", r"naive_mask", r"def heal\(",
             r"[\"']oracle[\"']", r"[\"']naive[\"']", r"[\"']truth[\"']", r"research\.demo")


def _python_files(wheel: Path) -> dict[str, str]:
    with zipfile.ZipFile(wheel) as archive:
        return {n: archive.read(n).decode() for n in archive.namelist() if n.endswith(".py")}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_wheel_runs_the_firewall_outside_the_repository(tmp_path):
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "--quiet", "-w", str(wheels), str(REPO)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("deid_client-*.whl")
    with zipfile.ZipFile(wheel) as archive:  # the product only: no research, tests or simulations
        packages = {name.split("/")[0] for name in archive.namelist() if name.endswith(".py")}
    assert packages == {"deid_client", "server"}, packages
    lab_in_wheel = [f"{name}: {word}" for name, text in _python_files(wheel).items()
                    for word in LAB_WORDS if re.search(word, text)]
    assert lab_in_wheel == []  # no model training, research plots or statistics, research mask sources
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                              "--no-deps", "--quiet", str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-2000:]
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # third-party packages only: a plain path line does not run the editable finder's .pth
    Path(site, "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DEID_PHANTOM_WEIGHTS")}
    env["PYTHONNOUSERSITE"] = "1"
    where = subprocess.run([str(python), "-c", "import deid_client, deid_client.phantom.model as p; "
                            "print(deid_client.__file__); print(p.phantom_weights_dir())"],
                           cwd=tmp_path, env=env, capture_output=True, text=True)
    assert where.returncode == 0, where.stderr[-2000:]
    for line in where.stdout.split():
        assert line.startswith(site), line  # the package and its weights come from the wheel
    data = hospital_folder(tmp_path / "hospital")
    out = tmp_path / "out"
    run = subprocess.run([str(venv / "bin" / "deid-client"), "firewall", str(data), "-o", str(out),
                          "--secret-file", str(tmp_path / "secret"), "theta=4.5",
                          "gate.no_face=release"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr[-2000:]  # the folder's 3 bad files
    manifest = json.loads((out / "manifest.json").read_text())
    k = compose_firewall().surrogates_per_photo  # the wheel ships the checkout's firewall.yaml
    assert manifest["settings"].get("surrogates_per_photo", 1) == k
    assert manifest["released"] + manifest["refused"] == 5 * k and manifest["settings"]["theta"] == 4.5
    assert len(list((out / "masks").glob("*.png"))) == manifest["released"] >= 3
