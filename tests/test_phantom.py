import json

import numpy as np
import pytest
from scipy import ndimage

from deid_client.io.images import read_image
from deid_client.firewall.masks import a_star, erythema_map
from deid_client.phantom import (
    LESION_KINDS,
    SKIN_TYPES,
    Identity,
    Lesion,
    make_phantom,
    plan_cohort,
    render_case,
    render_phantom,
    sample_identity,
    write_cohort,
)
from tests.metadata import metadata_in


def test_deterministic_from_seed():
    a, b = make_phantom(11, 96), make_phantom(11, 96)
    for field in ("image", "twin", "mask", "face"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert a.identity == b.identity and a.lesion == b.lesion
    assert not np.array_equal(a.image, make_phantom(12, 96).image)


@pytest.mark.parametrize("kind", LESION_KINDS)
def test_healthy_twin_is_exact_outside_the_lesion(kind):
    p = make_phantom(5, 192, lesion_kind=kind)
    assert p.image.dtype == np.uint8 and p.image.shape == (192, 192, 3)
    assert p.mask.any() and p.lesion.kind == kind
    changed = (p.image != p.twin).any(axis=2)
    diff = erythema_map(p.image, p.twin)
    # Away from the lesion the twin is bit-identical...
    assert not (changed & ~ndimage.binary_dilation(p.mask, iterations=6)).any()
    # ...and a pixel less than half lesion-on-skin (anti-aliased rim, skin mostly
    # hidden by lids or brows) gets at most half the peak redness (+ rounding).
    assert diff[~p.mask].max() < 0.5 * p.lesion.strength + 1.5
    assert np.median(diff[p.mask]) > 8 and (diff[~p.mask] < 5).mean() > 0.999
    assert not (p.mask & ~p.face).any(), "lesions lie on the face"


def test_no_lesion_gives_identical_twin():
    p = make_phantom(5, 96, lesion_kind="none")
    assert not p.mask.any() and np.array_equal(p.image, p.twin)


def test_any_size_from_64_to_1024():
    small, large = make_phantom(3, 64), make_phantom(3, 1024)
    assert small.image.shape == (64, 64, 3) and large.image.shape == (1024, 1024, 3)
    # the same picture at two resolutions: lesion area fractions agree
    assert small.mask.mean() == pytest.approx(large.mask.mean(), rel=0.2)
    for bad in (63, 1025):
        with pytest.raises(ValueError, match="64..1024"):
            make_phantom(3, bad)


def test_same_lesion_on_another_identity():
    p = make_phantom(21, 160, lesion_kind="malar")
    other = sample_identity(np.random.default_rng(99))
    q = render_phantom(other, p.lesion, 160)
    assert q.lesion == p.lesion and q.identity != p.identity
    assert not np.array_equal(p.twin, q.twin)
    # Anchored to landmarks: the butterfly stays over the cheeks and nose.
    cy_p, cx_p = ndimage.center_of_mass(p.mask)
    cy_q, cx_q = ndimage.center_of_mass(q.mask)
    assert abs(cx_p - 80) < 6 and abs(cx_q - 80) < 6 and abs(cy_p - cy_q) < 12


def test_skin_types_get_darker():
    lightness = []
    for skin_type in sorted(SKIN_TYPES):
        p = make_phantom(4, 128, skin_type=skin_type, lesion_kind="none", distractors=False)
        assert p.identity.skin_type == skin_type
        lab_l = read_image_l(p.twin)[p.face]
        lightness.append(np.median(lab_l))
    assert all(a > b for a, b in zip(lightness, lightness[1:])), lightness


def read_image_l(image):
    import cv2

    return cv2.cvtColor(image.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)[..., 0]


def test_distractors_fool_a_plain_redness_reading():
    rng = np.random.default_rng(0)
    with_d = [sample_identity(rng) for _ in range(200)]
    without = [sample_identity(rng, distractors=False) for _ in range(50)]
    assert any(i.jewellery for i in with_d) and any(i.flush > 0 for i in with_d)
    assert any("red" in j for i in with_d for j in i.jewellery)
    assert not any(i.jewellery or i.flush for i in without)
    # Lips are redder than the skin around them, with or without distractors.
    p = make_phantom(8, 192, lesion_kind="none", distractors=False)
    a = a_star(p.twin)
    mouth_row = int(96 + 96 * (-0.06 + p.identity.mouth_level * p.identity.face_height))
    lips = max(a[row, 90:102].mean() for row in range(mouth_row - 4, mouth_row + 5))
    assert lips > np.median(a[p.face]) + 5


def test_identity_and_lesion_round_trip_through_json():
    p = make_phantom(2, 64)
    identity = Identity.from_dict(json.loads(json.dumps(p.identity.to_dict())))
    lesion = Lesion.from_dict(json.loads(json.dumps(p.lesion.to_dict())))
    assert identity == p.identity and lesion == p.lesion
    assert np.array_equal(render_phantom(identity, lesion, 64).image, p.image)


def test_bad_identity_requests():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="skin_type"):
        sample_identity(rng, skin_type=7)
    with pytest.raises(ValueError, match="sex"):
        sample_identity(rng, sex="other")
    with pytest.raises(ValueError, match="lesion kind"):
        make_phantom(0, 64, lesion_kind="acne")


# --- cohorts ---------------------------------------------------------------


def test_plan_is_deterministic_and_complete():
    cases = plan_cohort(50, 3, seed=1)
    assert cases == plan_cohort(50, 3, seed=1) != plan_cohort(50, 3, seed=2)
    assert len(cases) == 50 and len({c.case_id for c in cases}) == 50
    assert {c.hospital for c in cases} == {0, 1, 2}
    with pytest.raises(ValueError):
        plan_cohort(2, 3)
    with pytest.raises(ValueError):
        plan_cohort(10, 2, non_iid=1.5)


def _spread(cases, attribute, values, n_hospitals):
    """Mean total-variation distance of each site's mix from the pooled mix."""
    def mix(cs):
        counts = np.array([sum(getattr(c, attribute) == v for c in cs) for v in values], float)
        return counts / counts.sum()
    pooled = mix(cases)
    return np.mean([0.5 * np.abs(mix([c for c in cases if c.hospital == h]) - pooled).sum()
                    for h in range(n_hospitals)])


def test_non_iid_skews_sites():
    iid = plan_cohort(3000, 5, seed=3, non_iid=0.0)
    skewed = plan_cohort(3000, 5, seed=3, non_iid=1.0)
    for attribute, values in (("skin_type", sorted(SKIN_TYPES)), ("lesion_kind", LESION_KINDS)):
        assert _spread(iid, attribute, values, 5) < 0.05
        assert _spread(skewed, attribute, values, 5) > 0.15
    sizes_iid = np.bincount([c.hospital for c in iid])
    sizes_skewed = np.bincount([c.hospital for c in skewed])
    assert sizes_iid.std() / sizes_iid.mean() < 0.1 < sizes_skewed.std() / sizes_skewed.mean()
    scales = [np.mean([c.lesion_scale for c in skewed if c.hospital == h]) for h in range(5)]
    assert np.ptp(scales) > 0.1


def test_write_cohort(tmp_path):
    cases = plan_cohort(6, 2, seed=4)
    report = write_cohort(cases, tmp_path, size=64, progress=False)
    assert report.ok and len(report.results) == 6
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [c["case_id"] for c in manifest["cases"]] == [c.case_id for c in cases]
    for entry, case in zip(manifest["cases"], cases):
        phantom = render_case(case, 64)
        files = {k: tmp_path / v for k, v in entry["files"].items()}
        assert np.array_equal(read_image(files["images"]), phantom.image)
        assert np.array_equal(read_image(files["healthy"]), phantom.twin)
        assert np.array_equal(read_image(files["masks"])[..., 0] > 127, phantom.mask)
        assert all(metadata_in(f.read_bytes()) == [] for f in files.values())
        assert entry["identity"]["skin_type"] == case.skin_type
    # Resuming keeps finished files untouched.
    first = tmp_path / manifest["cases"][0]["files"]["images"]
    stamp = first.stat().st_mtime_ns
    write_cohort(cases, tmp_path, size=64, progress=False)
    assert first.stat().st_mtime_ns == stamp
    assert not list(tmp_path.rglob(".*.tmp"))
