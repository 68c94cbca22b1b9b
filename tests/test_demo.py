from PIL import Image

from autocolor.checkpoint import save_model
from autocolor.cli import main
from autocolor.demo import samples_dir
from autocolor.models import create_model


def test_samples_are_small_gray_photos_with_licenses():
    photos = sorted(samples_dir().glob("*.jpg"))
    assert 4 <= len(photos) <= 8
    licenses = (samples_dir() / "LICENSES.md").read_text()
    for photo in photos:
        assert f"`{photo.name}`" in licenses
        assert photo.stat().st_size < 150_000
        with Image.open(photo) as im:
            assert im.mode == "L"


def test_demo_colorizes_every_sample_and_writes_before_after(tmp_path):
    model = tmp_path / "model"
    save_model(create_model("chroma-unet", width=16).eval(), model)
    assert main(["demo", "--out", str(tmp_path / "out"), "--model", str(model)]) == 0
    outputs = sorted((tmp_path / "out" / "samples").glob("*.jpg"))
    assert [p.name for p in outputs] == [p.name for p in sorted(samples_dir().glob("*.jpg"))]
    for out in outputs:
        with Image.open(out) as o, Image.open(samples_dir() / out.name) as i:
            assert o.size == i.size and o.mode == "RGB"
    with Image.open(tmp_path / "out" / "before_after.png") as grid:
        assert grid.height > 6 * 200
