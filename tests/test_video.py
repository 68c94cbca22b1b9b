"""Video colorization on tiny generated clips: what is kept, what is refused, what is never half-written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

av = pytest.importorskip("av")
pytest.importorskip("cv2")

import torch

from autocolor.cli import main
from autocolor.inference import Colorizer
from autocolor.video import VideoError, colorize_video

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "autocolor" / "samples"


def moving_square(i: int, w: int, h: int) -> np.ndarray:
    img = np.full((h, w, 3), 70, np.uint8)
    img[h // 4 : h // 4 + 12, 4 + 3 * i : 16 + 3 * i] = 210
    return img


def make_clip(path: Path, frames: int = 12, w: int = 64, h: int = 48, *, rate: int = 24, rotation: int | None = None,
              video_codec: str = "libx264", audio_codec: str | None = "aac", muxer: str | None = None,
              picture=moving_square) -> Path:
    """A clip of ``frames`` frames with a sine tone as long as the video."""
    with av.open(str(path), "w", format=muxer) as out:
        video = out.add_stream(video_codec, rate=rate)
        video.width, video.height = w, h
        video.pix_fmt = "yuv420p" if w % 2 == 0 and h % 2 == 0 else "yuv444p"
        if rotation is not None:
            video.set_display_rotation(rotation)
        audio = None
        if audio_codec is not None:
            audio = out.add_stream(audio_codec, rate=16000, options={"strict": "experimental"})  # FFmpeg's vorbis
            audio.layout = "stereo"
        for i in range(frames):
            for packet in video.encode(av.VideoFrame.from_ndarray(picture(i, w, h), format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        if audio is not None:
            t = np.arange(16000 * frames // rate) / 16000
            wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            tone = av.AudioFrame.from_ndarray(np.stack([wave, wave]), format="fltp", layout="stereo")
            tone.sample_rate, tone.pts = 16000, 0
            fmt = audio.codec_context.codec.audio_formats[0].name
            for resampled in av.AudioResampler(format=fmt, layout="stereo", rate=16000).resample(tone):
                for packet in audio.encode(resampled):
                    out.mux(packet)
            for packet in audio.encode():
                out.mux(packet)
    return path


def probe(path: Path) -> dict:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        frames = list(container.decode(video=0))
        info = {
            "frames": len(frames), "size": (frames[0].width, frames[0].height), "rate": video.average_rate,
            "pts": [float(f.pts * f.time_base) for f in frames], "rotation": frames[0].rotation,
            "audio": audio.codec_context.name if audio else None,
            "rgb": [f.to_ndarray(format="rgb24") for f in frames],
        }
    if audio is not None:
        with av.open(str(path)) as container:
            info["audio_seconds"] = sum(f.samples for f in container.decode(audio=0)) / audio.codec_context.sample_rate
    return info


@pytest.fixture(scope="module")
def colorizer():
    return Colorizer.load()


def test_frames_size_rate_rotation_and_audio_are_kept(colorizer, tmp_path):
    src = make_clip(tmp_path / "clip.mp4", frames=12, rotation=90)
    dst = tmp_path / "out" / "clip.mp4"
    assert colorizer.colorize_video(src, dst, render_size=64, progress=False) == 12
    before, after = probe(src), probe(dst)
    assert after["frames"] == 12 and after["size"] == (64, 48)
    assert after["rate"] == Fraction(24)
    assert after["pts"] == pytest.approx(before["pts"], abs=1e-3)
    assert after["rotation"] == before["rotation"] == 90
    assert after["audio"] == "aac" and after["audio_seconds"] == pytest.approx(before["audio_seconds"])
    assert [p.name for p in dst.parent.iterdir()] == ["clip.mp4"]  # no temporary file left behind
    chroma = np.ptp(after["rgb"][0].astype(int), axis=2)
    assert chroma.max() > 3  # colorized, not a gray copy


def test_variable_frame_rate_keeps_every_timestamp(colorizer, tmp_path):
    src, times = tmp_path / "vfr.mkv", [0.0, 0.04, 0.12, 0.16, 0.3, 0.34]
    with av.open(str(src), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(moving_square(i, 64, 48), format="rgb24")
            frame.pts, frame.time_base = round(t * 1000), Fraction(1, 1000)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
    dst = tmp_path / "out.mkv"
    colorize_video(colorizer, src, dst, render_size=64, progress=False)
    assert probe(src)["pts"] == pytest.approx(times, abs=1e-3)
    assert probe(dst)["pts"] == pytest.approx(times, abs=1e-3)


def test_audio_the_container_cannot_hold_is_reencoded(colorizer, tmp_path):
    src = make_clip(tmp_path / "clip.webm", frames=6, video_codec="libvpx", audio_codec="vorbis")
    dst = tmp_path / "out" / "clip.mp4"
    colorize_video(colorizer, src, dst, render_size=64, progress=False)
    after = probe(dst)
    assert after["frames"] == 6 and after["audio"] == "aac"
    assert after["audio_seconds"] == pytest.approx(probe(src)["audio_seconds"], abs=0.07)  # AAC pads a frame


def test_a_clip_without_audio_or_with_odd_sides_is_fine(colorizer, tmp_path):
    src = make_clip(tmp_path / "odd.mkv", frames=3, w=65, h=49, video_codec="ffv1", audio_codec=None)
    colorize_video(colorizer, src, tmp_path / "odd-out.mkv", render_size=64, progress=False)
    assert probe(tmp_path / "odd-out.mkv")["size"] == (65, 49)
    src = make_clip(tmp_path / "silent.mkv", frames=5, audio_codec=None)
    dst = tmp_path / "silent.mkv.out.mkv"
    colorize_video(colorizer, src, dst, render_size=64, progress=False, stabilize=False)
    assert probe(dst)["frames"] == 5 and probe(dst)["audio"] is None


def bad_inputs(folder: Path) -> dict[str, str]:
    """Files that are not usable videos, with the reason each must be refused for."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "text.mp4").write_text("hello, not a film")
    (folder / "empty.mov").write_bytes(b"")
    good = make_clip(folder / "good.mkv", frames=8).read_bytes()
    noise = np.random.default_rng(0).integers(0, 256, len(good) - 1200, dtype=np.uint8).tobytes()
    (folder / "broken.mkv").write_bytes(good[:1200] + noise)  # the header, then garbage
    with av.open(str(folder / "sound.mp4"), "w") as out:  # audio only
        add_silence(out)
    with av.open(str(folder / "zero.mkv"), "w") as out:  # a video track without a frame
        video = out.add_stream("libx264", rate=24)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        add_silence(out)
    return {"text.mp4": "not a readable video", "empty.mov": "not a readable video",
            "broken.mkv": "broken video stream", "sound.mp4": "no video stream", "zero.mkv": "no frames"}


def add_silence(out) -> None:
    stream = out.add_stream("aac", rate=16000)
    stream.layout = "mono"
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 4096), np.float32), format="fltp", layout="mono")
    frame.sample_rate, frame.pts = 16000, 0
    for packet in list(stream.encode(frame)) + list(stream.encode()):
        out.mux(packet)


def test_bad_inputs_get_one_line_errors_and_leave_nothing(colorizer, tmp_path):
    for name, reason in bad_inputs(tmp_path / "in").items():
        dst = tmp_path / "out" / name
        with pytest.raises(VideoError) as caught:
            colorize_video(colorizer, tmp_path / "in" / name, dst, render_size=64, progress=False)
        message = str(caught.value)
        assert message.startswith(str(tmp_path / "in" / name)) and reason in message and "\n" not in message, message
        assert not dst.parent.exists() or list(dst.parent.iterdir()) == []


def test_a_failure_mid_clip_leaves_no_file(colorizer, tmp_path, monkeypatch):
    import autocolor.video as video

    src = make_clip(tmp_path / "clip.mp4", frames=20)
    calls = []

    def failing_merge(gray, ab):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated crash in the second batch")
        return original(gray, ab)

    original = video.merge_frames
    monkeypatch.setattr(video, "merge_frames", failing_merge)
    with pytest.raises(RuntimeError, match="simulated"):
        colorize_video(colorizer, src, tmp_path / "out" / "clip.mp4", render_size=64, progress=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_cli_mixes_photos_and_videos_skips_done_and_survives_bad_ones(tmp_path, capsys):
    folder = tmp_path / "in"
    bad = bad_inputs(folder)
    (folder / "good.mkv").unlink()
    make_clip(folder / "film.mp4", frames=10)
    make_clip(folder / "old.ogv", frames=6, video_codec="libvpx", audio_codec="vorbis", muxer="webm")
    Image.fromarray(moving_square(0, 64, 48)[..., 0]).save(folder / "photo.png")
    out = tmp_path / "out"
    args = ["colorize", str(folder), "-o", str(out), "--no-progress", "--crf", "20", "--render-size", "64"]
    assert main(args) == 1  # some inputs failed
    err = capsys.readouterr().err
    for name, reason in bad.items():
        lines = [line for line in err.splitlines() if line.startswith(str(folder / name))]
        assert len(lines) == 1 and reason in lines[0], (name, err)
    assert "done 3, skipped 0 (already written), failed 5" in err
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["film.mp4", "old.mp4", "photo.png"]
    assert probe(out / "film.mp4")["frames"] == 10 and probe(out / "old.mp4")["frames"] == 6
    stamp = (out / "film.mp4").stat().st_mtime_ns
    assert main(["colorize", str(folder / "film.mp4"), "-o", str(out), "--no-progress", "--render-size", "64"]) == 0
    assert "done 0, skipped 1" in capsys.readouterr().err
    assert (out / "film.mp4").stat().st_mtime_ns == stamp


def test_a_killed_run_leaves_no_file_a_rerun_would_skip(tmp_path):
    src = make_clip(tmp_path / "film.mp4", frames=600)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "autocolor", "colorize", str(src), "-o", str(out), "--no-progress", "--threads", "1",
           "--render-size", "64"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:  # kill it once it is writing frames
        if any(p.stat().st_size > 0 for p in out.glob(".film.mp4.*")):
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "film.mp4").exists() and list(out.glob(".film.mp4.*.part"))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    assert "done 1, skipped 0" in done.stderr
    assert probe(out / "film.mp4")["frames"] == 600


def panned_photo(shift: int, grain_seed: int):
    """A photo panned ``shift`` pixels a frame, with fresh grain and exposure flicker."""
    photo = np.asarray(Image.open(SAMPLES / "boats.jpg").convert("L").resize((200, 120)), np.float32)

    def picture(i: int, w: int, h: int) -> np.ndarray:
        rng = np.random.default_rng(grain_seed + i)
        gray = photo[:h, shift * i : shift * i + w] * rng.uniform(0.96, 1.04) + rng.normal(0, 5, (h, w))
        return np.repeat(np.clip(gray, 0, 255).astype(np.uint8)[..., None], 3, axis=2)

    return picture


def test_stabilization_lowers_flicker_on_a_panned_clip(colorizer, tmp_path):
    import torch

    from autocolor.color import rgb_to_lab

    shift = 2
    src = make_clip(tmp_path / "pan.mkv", frames=12, w=128, h=96, audio_codec=None, picture=panned_photo(shift, 0))

    def flicker(stabilize: bool) -> float:
        dst = tmp_path / f"out-{stabilize}.mkv"
        colorize_video(colorizer, src, dst, render_size=128, stabilize=stabilize, progress=False)
        rgb = np.stack(probe(dst)["rgb"])  # (T, H, W, 3)
        ab = rgb_to_lab(torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255)[:, 1:]  # (T, 2, H, W)
        # frame t at column x shows what frame t-1 showed at column x + shift
        return (ab[1:, :, :, : -shift - 2] - ab[:-1, :, :, shift:-2]).abs().mean().item()

    per_frame, stabilized = flicker(False), flicker(True)
    assert stabilized < 0.7 * per_frame, (stabilized, per_frame)


def scene(t: int, shift: int = 4, gain: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A 96x128 gray frame (uint16) with a textured square moving ``shift`` pixels
    a frame over a textured background, and the square's mask at a quarter size."""
    import cv2

    rng = np.random.default_rng(7)
    background = cv2.GaussianBlur(rng.uniform(0.2, 0.5, (96, 128)).astype(np.float32), (0, 0), 2)
    texture = cv2.GaussianBlur(rng.uniform(0.6, 0.9, (32, 32)).astype(np.float32), (0, 0), 1.5)
    gray = background.copy()
    left = 16 + shift * t
    gray[32:64, left : left + 32] = texture
    mask = np.zeros((24, 32), bool)
    mask[8:16, left // 4 : left // 4 + 8] = True
    return (np.clip(gray * gain, 0, 1) * 65535).astype(np.uint16), mask


def test_stabilizer_follows_motion_ignores_exposure_flicker_and_restarts_at_cuts():
    from autocolor.video import ChromaStabilizer, StabilizerConfig

    rng = np.random.default_rng(0)
    frames = [scene(t, gain=rng.uniform(0.95, 1.05)) for t in range(10)]
    other = (np.random.default_rng(3).uniform(0, 1, (96, 128)) ** 3 * 65535).astype(np.uint16)  # another shot

    def guess(mask: np.ndarray, noise: float) -> np.ndarray:  # the "network": a = 40 on the square, noisy
        ab = np.zeros((2, 24, 32), np.float32)
        ab[0][mask] = 40.0
        return ab + rng.normal(0, noise, ab.shape).astype(np.float32)

    # Strong smoothing (the network on every 2nd frame, 0.8 carried: about 9 guesses
    # averaged) so that the noise removed stands out; the default averages about 3.
    stabilizer = ChromaStabilizer(StabilizerConfig(keep=0.8, predict_every=2))
    gray = np.stack([g for g, _ in frames] + [other])
    truths = [guess(m, 0) for _, m in frames] + [np.full((2, 24, 32), -30, np.float32)]
    guesses = [guess(m, 8) for _, m in frames] + [truths[-1]]
    out = stabilizer.steady(gray, lambda i: torch.from_numpy(np.stack([guesses[k] for k in i]))).numpy()
    assert stabilizer.cuts == 1  # exposure flicker is not a cut; the new shot is
    np.testing.assert_array_equal(out[-1], truths[-1])  # a cut starts afresh from the new guess
    for t in range(5, 10):  # later frames: closer to the truth than the guesses, and the square not left behind
        _, mask = frames[t]
        inner = np.zeros_like(mask)
        inner[9:15] = mask[9:15]
        inner[:, np.flatnonzero(mask.any(0))[[0, -1]]] = False  # the square's edge columns are half covered
        assert np.abs(out[t] - truths[t]).mean() < 0.6 * np.abs(guesses[t] - truths[t]).mean()
        assert out[t][0][inner].mean() > 32 and np.abs(out[t][0][~mask]).mean() < 4


def test_plan_jobs_gives_videos_their_container(tmp_path):
    from autocolor.inference import plan_jobs

    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for name in ["a.mp4", "b.MOV", "sub/c.ogv", "d.mkv", "e.avi", "photo.jpg", "notes.txt"]:
        (folder / name).write_bytes(b"x")
    jobs, problems = plan_jobs([str(folder)], tmp_path / "out", fmt="png")
    targets = {str(j.target.relative_to(tmp_path / "out")): j.fmt for j in jobs}
    assert targets == {"a.mp4": "video", "b.mov": "video", "sub/c.mp4": "video", "d.mkv": "video",
                       "e.mp4": "video", "photo.png": "png"} and problems == []


def test_max_frames_counts_decoded_frames_and_leaves_nothing(colorizer, tmp_path):
    src = make_clip(tmp_path / "clip.mp4", frames=12)
    with pytest.raises(VideoError, match="longer than 8 frames"):
        colorize_video(colorizer, src, tmp_path / "out" / "clip.mp4", render_size=64, progress=False, max_frames=8)
    assert list((tmp_path / "out").iterdir()) == []
    assert colorize_video(colorizer, src, tmp_path / "out" / "clip.mp4", render_size=64, progress=False,
                          max_frames=12) == 12


def test_gray_is_the_luma_plane_and_matches_the_rgb_route(tmp_path):
    from autocolor.video import _frame_gray, _rgb_gray

    src = make_clip(tmp_path / "pan.mp4", frames=3, w=128, h=96, audio_codec=None, picture=panned_photo(2, 0))
    with av.open(str(src)) as container:
        for frame in container.decode(video=0):
            assert frame.format.name == "yuv420p"
            gray = _frame_gray(frame)
            through_rgb = _rgb_gray(frame.to_ndarray(format="rgb24"))
            assert gray.shape == (96, 128) and gray.dtype == np.uint16
            assert np.abs(gray.astype(int) - through_rgb).max() <= 257  # RGB rounds to 8 bits: within one level


def test_faces_are_looked_for_once_a_shot_and_their_boxes_follow_the_motion():
    from autocolor.faces import available, detect_faces
    from autocolor.video import ChromaStabilizer, FaceTracker

    if not available():
        pytest.skip("needs opencv-python-headless<5 (the faces extra)")
    photo = np.asarray(Image.open(SAMPLES / "portrait.jpg").convert("L"), np.float32)
    gray = np.stack([(photo[:300, 5 + 3 * t : 325 + 3 * t] * 257).astype(np.uint16) for t in range(12)])  # a pan
    plan = ChromaStabilizer().plan(gray)
    tracker = FaceTracker()
    found = tracker.follow(gray, plan)
    assert tracker.detections == 1 and len(found) == len(plan.wanted) >= 4
    for i, boxes in zip(plan.wanted, found):
        (box,), (fresh,) = boxes, detect_faces(gray[i])
        assert abs(box.x - fresh.x) <= 4 and abs(box.y - fresh.y) <= 4, (i, box, fresh)
    assert abs(found[0][0].x - found[-1][0].x - 3 * plan.wanted[-1]) <= 3  # 3 px a frame to the left, as panned


def test_the_stabilizer_gives_the_same_chroma_whatever_the_batches_and_looks_ahead():
    from autocolor.video import ChromaStabilizer, StabilizerConfig

    rng = np.random.default_rng(1)
    gray = np.stack([scene(t, shift=2)[0] for t in range(30)])
    # the "network" changes its mind at frame 15: a = 0 before, 30 after
    guesses = [np.full((2, 24, 32), 0.0 if t < 15 else 30.0, np.float32) + rng.normal(0, 1, (2, 24, 32)).astype(np.float32)
               for t in range(30)]

    def predict(offset: int):
        return lambda i: torch.from_numpy(np.stack([guesses[offset + k] for k in i]))

    config = StabilizerConfig(keep=0.8, predict_every=3, lookahead=4)
    whole = ChromaStabilizer(config).steady(gray, predict(0)).numpy()
    stabilizer, parts, start = ChromaStabilizer(config), [], 0
    for size in (8, 5, 1, 9, 7):  # batches of any size, fed in order
        plan = stabilizer.plan(gray[start : start + size])
        parts.append(stabilizer.blend(plan, predict(start)(plan.wanted) if len(plan.wanted) else None))
        start += size
    parts.append(stabilizer.finish())
    assert sum(len(p) for p in parts[:-1]) < 30  # frames were held back for the keyframes ahead
    np.testing.assert_allclose(torch.cat(parts).numpy(), whole, atol=1e-4)
    assert len(whole) == 30
    causal = ChromaStabilizer(StabilizerConfig(keep=0.8, predict_every=3, lookahead=0)).steady(gray, predict(0)).numpy()
    a_both, a_past = whole[:, 0].mean(axis=(1, 2)), causal[:, 0].mean(axis=(1, 2))
    assert 3 < a_both[13] and a_past[13] < 1  # looking ahead, the change begins before it comes
    assert a_both[18] > a_past[18] + 5  # and is not left behind after it
    assert abs(a_both[0]) < 2 and a_past[-1] < a_both[-1] < 31  # nearer the new guess, never past it
