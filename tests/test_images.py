import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms, PngImagePlugin

from deid_client.io.images import (
    CorruptImageError,
    EmptyImageError,
    ImageReadError,
    ImageTooLargeError,
    NotAnImageError,
    read_image,
    write_image,
    write_mask,
)
from deid_client.io.ingest import ingest_folder
from deid_client.io.pseudonyms import load_site_secret, pseudonym
from tests.metadata import metadata_in


SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.fixture
def photo(rng) -> np.ndarray:
    return rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def exif_with(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "ClinicCam"  # Make
    exif[0x013B] = "Dr. Patient Name"  # Artist: must never survive
    return exif


# --- reading ---------------------------------------------------------------


def test_reads_png_exactly(photo):
    assert np.array_equal(read_image(encode(Image.fromarray(photo), "PNG")), photo)


def test_path_and_bytes_agree(tmp_path, photo):
    (tmp_path / "a.png").write_bytes(encode(Image.fromarray(photo), "PNG"))
    assert np.array_equal(read_image(tmp_path / "a.png"), read_image(str(tmp_path / "a.png")))


@pytest.mark.parametrize(
    "orientation, expected",
    [(1, lambda a: a), (3, lambda a: a[::-1, ::-1]), (6, lambda a: np.rot90(a, -1)),
     (8, lambda a: np.rot90(a, 1)), (2, lambda a: a[:, ::-1])],
)
def test_exif_orientation_is_applied(photo, orientation, expected):
    data = encode(Image.fromarray(photo), "PNG", exif=exif_with(orientation))
    assert np.array_equal(read_image(data), expected(photo))


def test_16bit_grayscale_is_scaled_not_clipped():
    ramp = np.linspace(0, 65535, 256 * 4).astype(np.uint16).reshape(4, 256)
    rgb = read_image(encode(Image.fromarray(ramp), "PNG"))
    assert rgb.dtype == np.uint8 and rgb.shape == (4, 256, 3)
    assert rgb[..., 0].min() == 0 and rgb[..., 0].max() == 255
    expected = np.round(ramp / 257.0).astype(np.uint8)
    assert np.abs(rgb[..., 0].astype(int) - expected).max() <= 1
    assert np.array_equal(rgb[..., 0], rgb[..., 2])


def test_alpha_is_composited_on_white(photo):
    rgba = np.dstack([photo, np.zeros(photo.shape[:2], np.uint8)])
    rgba[:, :32, 3] = 255
    out = read_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert np.array_equal(out[:, :32], photo[:, :32])
    assert (out[:, 32:] == 255).all()


def test_palette_grayscale_and_cmyk_become_rgb(photo):
    img = Image.fromarray(photo)
    pal = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    assert np.array_equal(read_image(encode(pal, "PNG")), np.asarray(pal.convert("RGB")))
    gray = img.convert("L")
    out = read_image(encode(gray, "PNG"))
    assert np.array_equal(out, np.repeat(np.asarray(gray)[..., None], 3, 2))
    cmyk = read_image(encode(img.convert("CMYK"), "TIFF"))
    assert cmyk.shape == photo.shape and np.abs(cmyk.astype(int) - photo).mean() < 2
    transparent = read_image(encode(pal, "PNG", transparency=0))
    assert transparent.shape == photo.shape
    for mode in ("1", "LA", "I", "F"):
        out = read_image(encode(img.convert(mode), "TIFF" if mode in "IF" else "PNG"))
        assert out.dtype == np.uint8 and out.shape == photo.shape, mode


def test_embedded_icc_profile_is_honoured(photo):
    tagged = read_image(encode(Image.fromarray(photo), "PNG", icc_profile=SRGB_ICC))
    assert np.abs(tagged.astype(int) - photo).max() <= 2  # sRGB -> sRGB: (almost) unchanged
    broken = read_image(encode(Image.fromarray(photo), "PNG", icc_profile=b"not a profile"))
    assert np.array_equal(broken, photo)  # a broken profile is ignored, as viewers do


def test_only_first_frame_of_animation(photo):
    frames = [Image.fromarray(photo), Image.fromarray(255 - photo)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    first = read_image(data)
    assert first.shape == photo.shape
    assert np.abs(first.astype(int) - photo).mean() < np.abs(first.astype(int) - (255 - photo)).mean()


def png_with_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` (a decompression bomb)."""
    data = bytearray(encode(Image.new("L", (1, 1)), "PNG"))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def bad_inputs(photo) -> dict[str, tuple[bytes | None, type[ImageReadError]]]:
    """Thirteen kinds of bad input, each with the error it must give."""
    img = Image.fromarray(photo)
    png, jpg = encode(img, "PNG"), encode(img, "JPEG")
    gif, webp, tif = encode(img, "GIF"), encode(img, "WEBP"), encode(img, "TIFF")
    return {
        "empty.jpg": (b"", EmptyImageError),
        "notes.jpg": (b"Patient notes, not a photo\n" * 20, NotAnImageError),
        "report.png": (b"%PDF-1.4\n1 0 obj << >> endobj\n", NotAnImageError),
        "cut.jpg": (jpg[: len(jpg) // 2], CorruptImageError),
        "cut.png": (png[: len(png) // 2], CorruptImageError),
        "cut.gif": (gif[: len(gif) // 2], CorruptImageError),
        "cut.webp": (webp[: len(webp) // 2], CorruptImageError),
        "cut.tif": (tif[: len(tif) // 2], CorruptImageError),
        "badcrc.png": (png[:20] + bytes([png[20] ^ 0xFF]) + png[21:], CorruptImageError),
        "badsof.jpg": (jpg.replace(b"\xff\xc0", b"\xff\xc0\x00\x00", 1), CorruptImageError),
        "bomb.png": (png_with_size(60_000, 60_000), ImageTooLargeError),
        "folder.png": (None, NotAnImageError),  # a directory named like an image
        "header_only.png": (png[:33], CorruptImageError),
    }


def materialise(folder, cases):
    for name, (data, _) in cases.items():
        if data is None:
            (folder / name).mkdir()
        else:
            (folder / name).write_bytes(data)


def test_each_bad_input_gives_its_clear_error(tmp_path, photo):
    cases = bad_inputs(photo)
    assert len(cases) >= 12
    materialise(tmp_path, cases)
    for name, (_, error) in cases.items():
        with pytest.raises(error) as info:
            read_image(tmp_path / name)
        message = str(info.value)
        assert message.startswith(str(tmp_path / name) + ": "), message
        assert "\n" not in message and "Traceback" not in message


def test_missing_file_and_limits(tmp_path, photo):
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "missing.jpg")
    data = encode(Image.fromarray(photo), "PNG")
    with pytest.raises(ImageTooLargeError, match="pixels"):
        read_image(data, max_pixels=photo.shape[0] * photo.shape[1] - 1)
    with pytest.raises(ImageTooLargeError, match="bytes"):
        read_image(data, max_bytes=len(data) - 1)


def test_batch_with_bad_files_finishes_good_ones(tmp_path, photo, secret):
    inbox, outbox = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    cases = bad_inputs(photo)
    materialise(inbox, cases)
    good = {f"good{i}.{ext}": np.roll(photo, i, axis=1) for i, ext in enumerate(["png", "jpg", "tif"])}
    for name, pixels in good.items():
        Image.fromarray(pixels).save(inbox / name, exif=exif_with(1))
    (outbox).mkdir()
    earlier = outbox / "kept.png"
    earlier.write_bytes(b"finished earlier")

    report = ingest_folder(inbox, outbox, secret, progress=False)

    assert sorted(p.name for p, _ in report.results) == sorted(good)
    assert sorted(p.name for p, _ in report.errors) == sorted(cases)
    written = sorted(outbox.glob("*.png"))
    assert len(written) == len(good) + 1 and earlier.read_bytes() == b"finished earlier"
    assert not [p for p in outbox.iterdir() if p.name.startswith(".")], "temp file left behind"
    for name in good:
        assert name.split(".")[0] not in " ".join(p.name for p in written)
    for _, out in report.results:
        assert metadata_in(out.read_bytes()) == []

    # A re-run redoes nothing and changes nothing.
    before = {p: p.stat().st_mtime_ns for p in written}
    again = ingest_folder(inbox, outbox, secret, progress=False)
    assert [o for _, o in again.results] == [o for _, o in report.results]
    assert {p: p.stat().st_mtime_ns for p in written} == before


# --- writing ---------------------------------------------------------------


def test_written_images_are_metadata_free(tmp_path, photo):
    # A source full of metadata; only pixels may reach the output.
    info = PngImagePlugin.PngInfo()
    info.add_text("Patient", "Jane Doe")
    source = Image.open(io.BytesIO(encode(Image.fromarray(photo), "PNG", pnginfo=info, exif=exif_with(1))))
    pixels = read_image(encode(source, "JPEG", exif=exif_with(6), icc_profile=SRGB_ICC, comment=b"jane"))
    for name in ("out.png", "out.jpg", "out.jpeg"):
        path = write_image(tmp_path / name, pixels)
        data = path.read_bytes()
        assert metadata_in(data) == [], name
        reread = Image.open(path)
        assert not reread.info.get("exif") and not reread.info.get("icc_profile")
        assert "comment" not in reread.info and not getattr(reread, "text", {})
    assert np.array_equal(read_image(tmp_path / "out.png"), pixels)
    mask = write_mask(tmp_path / "mask.png", pixels[..., 0] > 128)
    assert metadata_in(mask.read_bytes()) == []
    assert np.array_equal(read_image(mask)[..., 0] > 0, pixels[..., 0] > 128)


def test_metadata_parser_does_detect_metadata(photo):
    # Guard against a parser that could never fail.
    info = PngImagePlugin.PngInfo()
    info.add_text("Patient", "Jane Doe")
    assert "tEXt" in metadata_in(encode(Image.fromarray(photo), "PNG", pnginfo=info))
    jpg = encode(Image.fromarray(photo), "JPEG", exif=exif_with(1), comment=b"jane")
    found = " ".join(metadata_in(jpg))
    assert "0xE1" in found and "0xFE" in found


def test_write_is_atomic_on_failure(tmp_path, photo, monkeypatch):
    target = tmp_path / "x.png"
    target.write_bytes(b"previous")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        write_image(target, photo)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_write_rejects_bad_arrays_and_suffixes(tmp_path, photo):
    with pytest.raises(ValueError, match="png"):
        write_image(tmp_path / "x.gif", photo)
    with pytest.raises(TypeError):
        write_image(tmp_path / "x.png", photo.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        write_image(tmp_path / "x.png", photo[..., :2])
    assert list(tmp_path.iterdir()) == []


# --- pseudonyms ------------------------------------------------------------


def test_pseudonyms_are_keyed_and_content_based(photo, secret):
    name = pseudonym(photo, secret)
    assert name == pseudonym(photo.copy(), secret)
    assert name != pseudonym(photo, secret[::-1])
    other = photo.copy()
    other[0, 0, 0] ^= 1
    assert name != pseudonym(other, secret)
    assert len(name) == 20 and all(c in "0123456789abcdef" for c in name)
    with pytest.raises(ValueError, match="at least"):
        pseudonym(photo, b"short")


def test_site_secret_file(tmp_path, monkeypatch):
    path = tmp_path / "site.secret"
    with pytest.raises(ValueError, match="does not exist"):
        load_site_secret(path)
    created = load_site_secret(path, create=True)
    assert created == load_site_secret(path) and len(created) == 64
    assert (path.stat().st_mode & 0o777) == 0o600
    monkeypatch.setenv("DEID_SITE_SECRET", "from-the-environment-123")
    assert load_site_secret() == b"from-the-environment-123"
    monkeypatch.delenv("DEID_SITE_SECRET")
    with pytest.raises(ValueError, match="DEID_SITE_SECRET"):
        load_site_secret()


@pytest.mark.filterwarnings("ignore:A test tried to use socket")
def test_network_is_blocked():
    import socket

    with pytest.raises(Exception, match="(?i)block|not allowed|socket"):
        socket.create_connection(("203.0.113.1", 80), timeout=1)
