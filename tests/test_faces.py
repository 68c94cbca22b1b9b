import numpy as np
import pytest
import torch

from autocolor import faces


def test_points_go_inside_each_face_and_skip_dark_spots():
    face = faces.Face(x=100, y=50, w=40, h=40)
    points = faces.face_points([face], lambda x, y: 60.0)
    assert len(points) == 5
    assert all(100 <= x <= 140 and 50 <= y <= 90 and ab == faces.SKIN_AB for x, y, ab in points)
    assert faces.face_points([face], lambda x, y: 5.0) == []  # hair or shadow: no skin to correct


def test_no_face_no_guide():
    assert faces.face_guide(torch.full((1, 1, 96, 128), 50.0), (48, 64)) is None


@pytest.mark.skipif(not faces.available(), reason="needs opencv-python-headless<5 (the faces extra)")
def test_the_detector_finds_the_sample_portraits_face_and_nothing_in_the_landscapes():
    from pathlib import Path

    from PIL import Image

    samples = Path(__file__).resolve().parents[1] / "src" / "autocolor" / "samples"
    (face,) = faces.detect_faces(np.asarray(Image.open(samples / "portrait.jpg").convert("L")))
    assert 120 <= face.x + face.w / 2 <= 200 and 120 <= face.y + face.h / 2 <= 210 and face.w > 60  # her face
    for name in ("mountains.jpg", "boats.jpg", "mansion.jpg"):
        assert faces.detect_faces(np.asarray(Image.open(samples / name).convert("L"))) == [], name
    with_face = faces.face_guide(torch.from_numpy(np.asarray(Image.open(samples / "portrait.jpg").convert("L"),
                                                             dtype=np.float32) / 2.55)[None, None], (384, 256))
    assert with_face is not None and with_face.mask.sum() > 0
