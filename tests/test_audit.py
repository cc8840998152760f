"""Identity audits with dlib's real face recogniser, and the attackers of the benchmark."""

import importlib.util
import io

import numpy as np
import pytest
from matplotlib import cbook
from PIL import Image
from skimage import data

import deid_client.firewall.gate as gate
from deid_client.firewall.gate import SAME_PERSON, AuditModelMissing, face_distance, face_embedding
from research.reid import AwareAttacker, DlibAttacker, grayscale, photo_sessions, recoloured


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


@pytest.fixture(scope="module")
def hopper() -> np.ndarray:  # another real person: matplotlib's sample photo of Grace Hopper
    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as photo:
        return np.asarray(photo.convert("RGB"))


def _jpeg(image: np.ndarray, quality: int = 60) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def test_the_same_person_stays_the_same_through_everyday_changes(astronaut):
    brighter = np.clip(astronaut.astype(int) * 1.2 + 10, 0, 255).astype(np.uint8)
    shifted = np.roll(astronaut, (5, 7), axis=(0, 1))
    for changed in (_jpeg(astronaut), brighter, shifted):
        distance = face_distance(astronaut, changed)
        assert distance is not None and distance < SAME_PERSON / 3, distance
    assert face_distance(astronaut, astronaut) == 0.0


def test_different_people_are_apart(astronaut, hopper):
    assert face_distance(astronaut, hopper) > SAME_PERSON


def test_no_face_is_an_explicit_result(astronaut):
    assert face_embedding(data.coffee()) is None and face_embedding(data.chelsea()) is None
    assert face_distance(astronaut, data.coffee()) is None
    assert face_distance(np.zeros((64, 64, 3), np.uint8), astronaut) is None


def test_blur_is_not_a_change_of_identity(astronaut):
    """A 64-px copy enlarged again is far from the photo (resolution is not
    de-identification), so the two are compared at the copy's resolution: the smaller
    one's by default, or the one it was made at."""
    small = np.asarray(Image.fromarray(astronaut).resize((64, 64), Image.LANCZOS))
    enlarged = np.asarray(Image.fromarray(small).resize(astronaut.shape[1::-1], Image.LANCZOS))
    assert np.linalg.norm(face_embedding(astronaut) - face_embedding(enlarged)) > 0.4
    assert face_distance(astronaut, small) < 0.1
    assert face_distance(astronaut, enlarged, resolution=64) < SAME_PERSON / 3


def test_missing_models_say_how_to_get_them(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(AuditModelMissing, match="pip install face_recognition_models"):
        gate._models_dir()


@pytest.fixture(scope="module")
def phantom_patients():
    sessions, people = photo_sessions(8, 5, size=64, seed=11)
    gallery = np.stack([p.image for s in sessions for p in s[:3]])
    probes = np.stack([p.image for s in sessions for p in s[3:]])
    return sessions, people, gallery, probes


def test_dlib_recognises_phantom_patients_it_never_trained_on(phantom_patients):
    sessions, people, gallery, probes = phantom_patients
    attacker = DlibAttacker(gallery, np.repeat(np.arange(8), 3))
    assert (attacker.identify(probes) == np.repeat(np.arange(8), 2)).mean() >= 0.9


def test_an_attacker_pools_a_photos_surrogates(phantom_patients):
    """identify_pooled: one answer per group, the patient of the highest mean score. Two
    views that each lean to a wrong patient, but both a little to the right one, name the
    right one together; a group of one is the attacker's own answer."""
    from research.reid import Attacker

    class Fixed(Attacker):
        def scores(self, images):
            return images[:, 0, 0, :3].astype(float)  # a photo's first pixel is its scores

    views = np.zeros((1, 2, 4, 4, 3))
    views[0, 0, 0, 0] = [0.0, 0.6, 0.7]  # leans to patient 2
    views[0, 1, 0, 0] = [0.7, 0.6, 0.0]  # leans to patient 0
    assert list(Fixed().identify(views[0])) == [2, 0] and list(Fixed().identify_pooled(views)) == [1]

    _, _, gallery, probes = phantom_patients
    attacker = DlibAttacker(gallery, np.repeat(np.arange(8), 3))
    assert np.array_equal(attacker.identify_pooled(probes[:, None]), attacker.identify(probes))


def test_the_aware_attacker_sees_through_recolouring(phantom_patients):
    """Trained on grayscale, recoloured sessions, it names patients photographed with
    colours it never saw them in."""
    sessions, people, _, _ = phantom_patients
    attacker = AwareAttacker([s[:3] for s in sessions], people, epochs=60, seed=0)
    rng = np.random.default_rng(5)
    from deid_client.phantom import new_session, render_phantom, sample_lesion

    disguised = np.stack([render_phantom(new_session(recoloured(p, rng), rng), sample_lesion(rng), 64).image
                          for p in people for _ in range(2)])
    assert (attacker.identify(disguised) == np.repeat(np.arange(8), 2)).mean() >= 0.5  # chance 0.125


def test_recolouring_and_grayscale():
    person = photo_sessions(1, 1, seed=3)[1][0]
    other = recoloured(person, np.random.default_rng(0))
    kept = ("face_width", "jaw_taper", "eye_spacing", "nose_length", "hair_style", "moles", "freckles")
    assert all(getattr(other, k) == getattr(person, k) for k in kept)
    gray = grayscale(np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8)[None])
    assert gray.shape == (1, 1, 2, 3) and (gray[..., 0] == gray[..., 2]).all()
    assert gray[0, 0, :, 0].tolist() == [76, 29]


def test_the_gate_stops_the_patient_and_lets_another_person_through(astronaut, hopper):
    """The identity gate on real photos: the patient back (or blurred to the model's
    working size) is refused, another person is released, a photo without a face is
    refused unless the site says otherwise; the twin counts as much as the surrogate."""
    from deid_client.firewall.gate import GateConfig, judge

    gate = GateConfig(threshold=SAME_PERSON)
    hopper = np.asarray(Image.fromarray(hopper).resize(astronaut.shape[1::-1]))
    same = judge(astronaut, astronaut, astronaut, gate)
    assert not same.released and same.distance == 0.0 and "too close" in same.reason
    small = np.asarray(Image.fromarray(astronaut).resize((64, 64), Image.LANCZOS))
    enlarged = np.asarray(Image.fromarray(small).resize(astronaut.shape[1::-1], Image.LANCZOS))
    assert not judge(astronaut, enlarged, enlarged, gate, resolution=64).released  # blur is no change
    other = judge(astronaut, hopper, hopper, gate)
    assert other.released and other.distance > SAME_PERSON
    assert not judge(astronaut, hopper, astronaut, gate).released  # the twin gave the patient away
    cat = data.chelsea()
    assert not judge(cat, cat, cat, gate).released and judge(cat, cat, cat, gate).distance is None
    assert judge(cat, cat, cat, GateConfig(threshold=SAME_PERSON, no_face="release")).released
    assert judge(astronaut, astronaut, astronaut, GateConfig(threshold=0.6, enabled=False)).released
    with pytest.raises(ValueError, match="no_face"):
        GateConfig(threshold=0.6, no_face="maybe")
