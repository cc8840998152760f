"""The firewall as a hospital runs it: `deid-client firewall DATA_DIR -o OUT_DIR` on real photos."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from deid_client.editing.backends import load_backend
from deid_client.cli import main
from deid_client.firewall.config import compose_firewall
from deid_client.firewall.folder import MANIFEST, OUTPUTS
from deid_client.phantom import sample_identity
from deid_client.phantom.language import attributes_of, prompt_for
from deid_client.editing.prompts import PromptTemplate
from tests.metadata import metadata_in

PATIENT = "Jane Q. Patient"  # written into a photo's EXIF: must appear nowhere in the outputs


def hospital_folder(root: Path, *, bad: bool = True) -> Path:
    """A site's folder of real photos (one whose EXIF names the patient), plus bad files."""
    images = root / "images"
    images.mkdir(parents=True)
    exif = Image.Exif()
    exif[0x013B] = PATIENT  # Artist
    exif[0x010E] = f"{PATIENT}, MRN 0012345, rosacea"  # ImageDescription
    Image.fromarray(skdata.astronaut()[::4, ::4]).save(images / "jane_patient_face.jpg", exif=exif)
    Image.fromarray(skdata.chelsea()[::3, ::3]).save(images / "mr_smith.png")
    Image.fromarray(skdata.coffee()[::4, ::4]).save(images / "visit_3.webp")
    Image.fromarray(skdata.rocket()[::4, ::4]).save(images / "followup.tif")
    Image.fromarray(skdata.astronaut()[100:300:2, 150:350:2]).save(images / "close_up.png")
    if bad:
        (images / "empty.png").write_bytes(b"")
        (images / "referral_letter.jpg").write_text("not a photo")
        whole = (images / "mr_smith.png").read_bytes()
        (images / "broken_scan.png").write_bytes(whole[:len(whole) // 3])
    return root


def firewall_cli(*args) -> list[str]:
    return [sys.executable, "-m", "deid_client.cli", "firewall", *map(str, args)]


def outputs(out: Path) -> dict[str, bytes]:
    """Every file the firewall left (the manifest's timings aside), by relative path."""
    files = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.name == MANIFEST:
            manifest = json.loads(data)
            for entry in manifest["photos"]:
                entry.pop("seconds", None)
            data = json.dumps(manifest, sort_keys=True).encode()
        files[str(path.relative_to(out))] = data
    return files


#: Photos without faces (a cat, coffee, a rocket) are released here, not refused: the
#: tests that need files to look at say so; the gate's defaults are tested on their own.
RELEASE_NO_FACE = "gate.no_face=release"
#: The shipped surrogates per photo: a folder batch writes K files of each photo.
K = compose_firewall().surrogates_per_photo


def photo_of(name: str) -> str:
    """The photo's pseudonym in a surrogate's name (``<pseudonym>-<k>`` where K > 1)."""
    return name.rsplit("-", 1)[0] if K > 1 else name


def test_real_photos_and_bad_files_through_the_command(tmp_path, capsys):
    site = hospital_folder(tmp_path / "site")
    out = tmp_path / "out"
    argv = ["firewall", str(site), "-o", str(out), "--secret-file", str(tmp_path / "secret"),
            RELEASE_NO_FACE]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 1  # some photos failed
    skipped = [line for line in err.splitlines() if line.startswith("deid-client: skipped:")]
    assert len(skipped) == 3
    assert all(name in err for name in ("empty.png", "referral_letter.jpg", "broken_scan.png"))
    manifest = json.loads((out / MANIFEST).read_text())
    released = [e for e in manifest["photos"] if e["status"] == "released"]
    refused = [e for e in manifest["photos"] if e["status"] == "refused"]
    assert len(released) >= 3 and len(released) + len(refused) == 5 * K and manifest["errors"] == 3
    assert manifest["released"] == len(released) and manifest["refused"] == len(refused)
    assert all("too close" in e["reason"] and e["identity_distance"] < 0.36 for e in refused)
    names = {e["pseudonym"] for e in released}
    for folder in OUTPUTS:  # the same pseudonymous PNG name in all three folders
        assert {p.stem for p in (out / folder).iterdir()} == names
    photos = {photo_of(n) for n in names}
    assert all(len(n) == 20 and set(n) <= set("0123456789abcdef") for n in photos)
    assert len(names) == K * len(photos)
    text = (out / MANIFEST).read_text()
    for stem in ("jane", "smith", "visit_3", "followup", "close_up", "referral", "broken_scan", "mrn",
                 "rosacea"):
        assert stem not in text.lower()  # never an input file name, never metadata text
    for path in out.rglob("*.png"):
        data = path.read_bytes()
        assert metadata_in(data) == [] and b"Jane" not in data, path
    for entry in released:
        assert entry["target_prompt"].endswith("with facial erythema") and 0 <= entry["lesion_fraction"] < 1
        assert set(entry) == {"pseudonym", "status", "reason", "target_prompt", "seed", "seconds",
                              "identity_distance", "lesion_fraction"} | ({"photo"} if K > 1 else set())
    surrogate = np.asarray(Image.open(out / "surrogates" / f"{released[0]['pseudonym']}.png"))
    assert surrogate.dtype == np.uint8 and surrogate.ndim == 3
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.size == (3 * 128, min(len(released), 12) * 128)  # the first 12 released (README)

    # A rerun finds everything done and leaves the outputs as they were.
    before = outputs(out)
    assert main(argv) == 1
    assert f"({5 * K} done by an earlier run)" in capsys.readouterr().err
    assert outputs(out) == before
    # Other settings into the same folder: a usage error, and nothing changes.
    assert main([*argv, "theta=4.0"]) == 2
    assert "other settings" in capsys.readouterr().err and outputs(out) == before


@pytest.mark.parametrize(("argv", "message"), [
    (["firewall", "{tmp}/nowhere", "-o", "{tmp}/o"], "not a folder"),
    (["firewall", "{tmp}", "-o", "{tmp}/o", "identity.n_maxx=3"], "identity.n_maxx"),
    (["firewall", "{tmp}", "-o", "{tmp}/o", "--model", "{tmp}/no_model"], "no such model folder"),
    (["firewall", "{tmp}", "-o", "{tmp}/o", "preset=no_such_preset"], "no_such_preset"),
])
def test_firewall_mistakes_are_one_line(tmp_path, capsys, argv, message):
    hospital_folder(tmp_path, bad=False)
    argv = [a.format(tmp=tmp_path) for a in argv] + ["--secret-file", str(tmp_path / "s")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("deid-client: error:") and message in err[-1]
    assert not (tmp_path / "o" / MANIFEST).exists()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_run_killed_at_any_moment_resumes_byte_identical(tmp_path):
    """SIGKILL while photos are being written, then at a random moment, then a rerun: the
    outputs are byte for byte those of an uninterrupted run (the manifest's timings aside)."""
    site = hospital_folder(tmp_path / "site")
    for i in range(4):  # more photos: more batches to be killed in
        Image.fromarray(np.roll(skdata.astronaut()[::4, ::4], 17 * i, axis=1)).save(
            site / "images" / f"extra_{i}.png")
    secret = ["--secret-file", tmp_path / "secret", RELEASE_NO_FACE]
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    whole = subprocess.run(firewall_cli(site, "-o", tmp_path / "whole", *secret), env=env,
                           capture_output=True, text=True, timeout=300)
    assert whole.returncode == 1, whole.stderr[-2000:]
    out = tmp_path / "killed"
    kills = 0
    for moment in ("first surrogate written", random.Random(0).uniform(0.5, 3.0)):
        process = subprocess.Popen(firewall_cli(site, "-o", out, *secret), env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        if isinstance(moment, str):  # kill mid-batch, as soon as the first file lands
            while not any((out / "surrogates").glob("*.png")) and time.monotonic() < deadline:
                time.sleep(0.005)
        else:  # kill at a random moment once the model is working
            while not (out / MANIFEST).exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(moment)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    assert kills >= 1
    partial = json.loads((out / MANIFEST).read_text())
    done = json.loads((tmp_path / "whole" / MANIFEST).read_text())
    # the kills left work undone (K surrogates of each photo: count them, not the photos)
    assert partial["released"] + partial["refused"] < done["released"] + done["refused"]
    rerun = subprocess.run(firewall_cli(site, "-o", out, *secret), env=env, capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 1, rerun.stderr[-2000:]
    assert outputs(out) == outputs(tmp_path / "whole")


def test_without_the_identity_edit_nothing_is_released(tmp_path):
    """identity.n_max=0 (and n_min=0: no sampling steps either) gives the patient back: the
    gate refuses every photo (the patient's own face, or no face to audit), and no file of
    them is written; a node then fails with a clear error instead of training on patients."""
    from deid_client.task.data import load_node_data
    from tests.runconfig import data_settings
    from deid_client.phantom import plan_cohort, write_cohort

    write_cohort(plan_cohort(6, 1, seed=2), tmp_path / "cohort", size=64, progress=False)
    site = tmp_path / "cohort" / "hospital_0"
    out = tmp_path / "out"
    assert main(["firewall", str(site), "-o", str(out), "--secret-file", str(tmp_path / "s"),
                 "identity.n_max=0", "identity.n_min=0"]) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["released"] == 0 and manifest["refused"] == 6 * K
    assert not any((out / folder).exists() and any((out / folder).iterdir()) for folder in OUTPUTS)
    faces = [e for e in manifest["photos"] if e["identity_distance"] is not None]
    assert faces and all(e["identity_distance"] < 0.1 for e in faces)  # the patient, unchanged
    with pytest.raises(ValueError, match="no photo made it through the firewall"):
        load_node_data(data_settings(data_dir=str(site), image_size=64,
                                     firewall=("identity.n_max=0", "identity.n_min=0")))


def test_a_photo_without_a_face_is_refused_without_new_draws(tmp_path):
    """The gate cannot audit a patient photo without a face on any draw: it is refused
    after one (and a photo with a face that is refused is retried gate.retries times)."""
    from deid_client.firewall import Firewall, Photo, run_folder

    cfg = compose_firewall(["gate.retries=2", "identity.n_max=0", "identity.n_min=0"])
    backend = load_backend(cfg.model)
    firewall = Firewall(cfg, backend)
    calls = []
    edit_batch = backend.edit_batch
    backend.edit_batch = lambda images, *a, **k: calls.append(len(images)) or edit_batch(images, *a, **k)
    coffee = Photo(lambda: skdata.coffee()[::8, ::8], "coffee.png")
    report = run_folder(firewall, [coffee], tmp_path / "a", progress=False)
    assert report.refused and len(calls) == 2  # one draw: heal, then the identity edit
    face = Photo(lambda: skdata.astronaut()[20:276:4, 130:386:4], "astronaut.png")  # 64 px, a face
    calls.clear()
    report = run_folder(firewall, [face], tmp_path / "b", progress=False)
    assert report.refused and len(calls) == 2 * 3  # the patient unchanged on all three draws


def test_gate_retries_draw_new_noise_not_a_new_target():
    """A retry keeps the photo's first target: a target the gate picked (one far enough from
    the patient to pass) would tell the patient's attributes (docs/privacy_attackers.md)."""
    from deid_client.firewall import Firewall

    cfg = compose_firewall(["gate.retries=2", "identity.n_max=0", "identity.n_min=0"])
    firewall = Firewall(cfg, load_backend(cfg.model))
    face = skdata.astronaut()[20:276:4, 130:386:4]
    keys = [f"photo-{i}" for i in range(6)]
    results = firewall([face] * len(keys), keys=keys)
    assert all(not r.released and r.verdict.distance is not None for r in results)  # retried twice
    assert [r.target for r in results] == [firewall.draw_target(k) for k in keys]


def test_a_photos_surrogates_share_one_look_at_the_patient(tmp_path, monkeypatch):
    """surrogates_per_photo=K: the gate reads the patient's face once per photo, not once per
    surrogate or per retry, and still judges each surrogate on its own."""
    from deid_client.firewall import Firewall, Photo, firewall, run_folder

    looks = []
    embed = firewall.face_embedding
    monkeypatch.setattr(firewall, "face_embedding", lambda image, **k: looks.append(1) or embed(image, **k))
    cfg = compose_firewall(["gate.retries=1", "identity.n_max=0", "identity.n_min=0",
                            "surrogates_per_photo=3"])
    faces = [Photo(lambda c=c: skdata.astronaut()[20:276:4, c:c + 256:4], f"{c}.png") for c in (120, 130)]
    report = run_folder(Firewall(cfg, load_backend(cfg.model)), faces, tmp_path / "out", progress=False)
    assert len(report.refused) == 6  # each surrogate judged (the patient unchanged: refused)
    assert len(looks) == 2
    # the photo is known by its pixels, not by which array holds them
    looks.clear()
    face = faces[0].load()
    results = Firewall(cfg, load_backend(cfg.model))([face, face.copy()], keys=["a", "a/1"])
    assert len(results) == 2 and len(looks) == 1


def test_site_attributes_steer_targets_only_when_asked(tmp_path):
    """attributes.csv beside the photos: by default (min_change 0) targets are drawn blind to
    it, the very prompts drawn without it (so a surrogate tells nothing of its patient's
    attributes); with min_change=3 each target is 3 steps from what is known."""
    from deid_client.io.images import read_image
    from deid_client.io.pseudonyms import load_site_secret, pseudonym

    site = hospital_folder(tmp_path / "site", bad=False)

    def targets(out: Path, *overrides: str) -> dict[str, str]:
        assert main(["firewall", str(site), "-o", str(out), "--secret-file", str(tmp_path / "s"),
                     RELEASE_NO_FACE, *overrides]) == 0
        photos = json.loads((out / MANIFEST).read_text())["photos"]
        return {e["pseudonym"]: e["target_prompt"] for e in photos}

    unknown = targets(tmp_path / "unknown")
    known = {"jane_patient_face.jpg": {"sex": "female", "skin_type": "2"},
             "mr_smith.png": {"sex": "male", "skin_type": "6"}}
    (site / "attributes.csv").write_text("file,sex,skin_type\n" + "".join(
        f"{f},{a['sex']},{a['skin_type']}\n" for f, a in known.items()))
    assert targets(tmp_path / "blind") == unknown
    kept = targets(tmp_path / "kept", "min_change=3")
    prompts, secret = compose_firewall().prompts, load_site_secret(tmp_path / "s")
    for file, patient in known.items():
        photo = pseudonym(read_image(site / "images" / file), secret)
        mine = [target for name, target in kept.items() if photo_of(name) == photo]
        assert len(mine) == K
        for target in mine:
            chosen = next(p for p in prompts.people() if prompts.describe(p) == target)
            assert prompts.distance(patient, chosen) >= 3, (patient, target)
    (site / "attributes.csv").write_text("file,sex\nmr_smith.png,robot\n")
    assert main(["firewall", str(site), "-o", str(tmp_path / "o2"), "--secret-file",
                 str(tmp_path / "s")]) == 1  # that photo fails with a clear reason, the rest go on


def test_several_surrogates_per_photo_each_with_its_own_target_and_noise(tmp_path):
    """surrogates_per_photo=K: K surrogates of each photo under <pseudonym>-<k>, each in the
    manifest with its photo's pseudonym; surrogate 0 is the one K = 1 makes (up to the
    batched kernels' rounding, as a photo alone against its batch, times the lesion gain
    inside the lesion); the others have their
    own targets and noise; a rerun redoes nothing."""
    from deid_client.io.images import read_image

    site = hospital_folder(tmp_path / "site", bad=False)

    def run(out: Path, *overrides: str) -> list[dict]:
        assert main(["firewall", str(site), "-o", str(out), "--secret-file", str(tmp_path / "s"),
                     RELEASE_NO_FACE, *overrides]) == 0
        return json.loads((out / MANIFEST).read_text())["photos"]

    one = {e["pseudonym"]: e for e in run(tmp_path / "one", "surrogates_per_photo=1")}
    three = run(tmp_path / "three", "surrogates_per_photo=3")
    assert len(one) == 5 and len(three) == 15
    assert {e["pseudonym"] for e in three} == {f"{p}-{k}" for p in one for k in range(3)}
    assert all(e["pseudonym"].startswith(e["photo"] + "-") for e in three)
    for name, entry in one.items():
        mine = {e["pseudonym"]: e for e in three if e["photo"] == name}
        assert mine[f"{name}-0"]["target_prompt"] == entry["target_prompt"]
        first = read_image(tmp_path / "three" / "surrogates" / f"{name}-0.png").astype(int)
        alone = read_image(tmp_path / "one" / "surrogates" / f"{name}.png").astype(int)
        # a level of rounding in the twin, and the lesion gain (1.25) times one in the carried
        # lesion: at most 2 levels, on few pixels
        assert np.abs(first - alone).max() <= 2
        assert (np.abs(first - alone) > 1).mean() < 0.01
        others = [read_image(tmp_path / "three" / "surrogates" / f"{name}-{k}.png") for k in (1, 2)]
        assert not np.array_equal(others[0], others[1]) and not np.array_equal(others[0], first)
    targets = [e["target_prompt"] for e in three]
    assert len(set(targets)) > len(one)  # the surrogates of a photo draw their own targets
    before = (tmp_path / "three" / MANIFEST).read_bytes()
    run(tmp_path / "three", "surrogates_per_photo=3")
    assert (tmp_path / "three" / MANIFEST).read_bytes() == before
    with pytest.raises(ValueError, match="surrogates_per_photo"):
        compose_firewall(["surrogates_per_photo=0"])


def test_phantom_prompts_are_the_models_own_words():
    """The phantom preset describes a phantom exactly as the model was trained to read it,
    and its targets keep min_change and the excluded combinations."""
    prompts = compose_firewall().prompts
    rng = np.random.default_rng(0)
    for _ in range(200):
        person = sample_identity(rng)
        assert prompts.describe(attributes_of(person)) == prompt_for(person)
        assert prompts.describe(attributes_of(person), healthy=True) == prompt_for(person, erythema=False)
        for target in prompts.draw_targets(attributes_of(person), 3, rng, min_change=3):
            chosen = next(p for p in prompts.people() if prompts.describe(p) == target)
            assert prompts.distance(attributes_of(person), chosen) >= 3
            assert not (int(chosen["skin_type"]) >= 4 and chosen["hair_colour"] in ("blond", "grey"))
    assert prompts.describe(None) == "a photo of a person, with facial erythema"
    assert prompts.describe({"sex": "male"}) == "a photo of a person, with facial erythema"
    with pytest.raises(ValueError, match="skin_type"):
        prompts.describe({"skin_type": "7"})
    with pytest.raises(ValueError, match="person"):
        PromptTemplate(patient="{condition}", person="a {sex}, {condition}", condition="c",
                       healthy="h", attributes={"age": {"old": "old"}})
    with pytest.raises(ValueError, match="no_face"):
        compose_firewall(["gate.no_face=maybe"])
    with pytest.raises(ValueError, match="lesion must be one of"):
        compose_firewall(["lesion=painted"])
    with pytest.raises(ValueError, match="twin_from=patient"):
        compose_firewall(["lesion=carried", "twin_from=surrogate"])
    with pytest.raises(ValueError, match="gate"):
        compose_firewall(["+gate.strict=true"])
    photo = compose_firewall(["preset=sd35_medium"])
    assert photo.model.id == "stabilityai/stable-diffusion-3.5-medium"
    assert photo.prompts.healthy_prompt(photo.prompts.describe(None)).endswith("clear, healthy skin")


def test_files_that_are_not_photos_are_counted_in_one_line(tmp_path, capsys):
    """A .heic or .dcm beside the photos is not taken, and the site is told so, once."""
    site = tmp_path / "site" / "images"
    site.mkdir(parents=True)
    Image.fromarray(skdata.astronaut()[::8, ::8]).save(site / "visit.png")
    for name in ("scan_1.dcm", "scan_2.dcm", "phone.heic"):
        (site / name).write_bytes(b"not for the firewall")
    (site / ".DS_Store").write_bytes(b"")  # hidden files are no one's photos
    code = main(["firewall", str(tmp_path / "site"), "-o", str(tmp_path / "out"), "--secret-file",
                 str(tmp_path / "s"), RELEASE_NO_FACE, "identity.n_max=0", "identity.n_min=0"])
    err = capsys.readouterr().err
    assert code == 0
    lines = [line for line in err.splitlines() if "not taken as photos" in line]
    assert len(lines) == 1 and lines[0].startswith("firewall: 3 files not taken as photos (2 .dcm, 1 .heic)")
