"""Tests for autocolor.photos: a tiny fake .deb stands in for the Debian packages."""

from __future__ import annotations

import csv
import io
import json
import shutil
import struct
import subprocess
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autocolor import photos
from autocolor.photos import (
    MANIFEST_COLUMNS,
    SPLITS,
    MissingPhotoWarning,
    SCENE_CATEGORIES,
    PhotoCorpusError,
    build_photo_corpus,
    extract_deb,
    load_sources,
    photo_categories,
    prepare_photo,
    read_eet,
    read_rcc,
)

PKG = "autocolor-fake-photos"
VERSION = "1.2-3"
BIG = "usr/share/fake/big.jpg"
CUTOUT = "usr/share/fake/cutout.png"
SMALL = "usr/share/fake/small.png"
LINK = "usr/share/fake/link.jpg"
BUNDLE = "usr/share/fake/bundle.rcc"
IN_BUNDLE = "app/src/activities/zoo/resource/photo.png"  # stored uncompressed
IN_BUNDLE_Z = "app/src/activities/zoo/resource/readme.txt"  # stored zlib-compressed
THEME = "usr/share/fake/backgrounds/Hills.edj"
IN_THEME = "edje/images/0"

needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb not available")


def _gradient(w: int, h: int) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None].repeat(w, 1)
    rgb = np.stack([x, y, 255 - x], -1).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


def _rcc(files: dict[str, tuple[bytes, bool]], version: int = 3) -> bytes:
    """Build a binary Qt resource file: {path: (content, compress)} -> .rcc bytes."""
    tree: dict = {}
    for path, item in files.items():
        *dirs, leaf = path.split("/")
        node = tree
        for d in dirs:
            node = node.setdefault(d, {})
        node[leaf] = item
    names = bytearray()
    payload = bytearray()
    name_off: dict[str, int] = {}

    def name(n: str) -> int:
        if n not in name_off:
            name_off[n] = len(names)
            enc = n.encode("utf-16-be")
            names.extend(struct.pack(">HI", len(n), 0) + enc)
        return name_off[n]

    # Breadth-first node table, as rcc writes it: children of a directory are contiguous.
    nodes: list[bytes] = []
    pending: list[tuple[int, str, object]] = []
    extra = b"\0" * 8 if version >= 2 else b""
    nodes.append(b"")  # root, filled below
    pending.append((0, "", tree))
    while pending:
        index, nm, obj = pending.pop(0)
        if isinstance(obj, dict):
            first = len(nodes)
            children = sorted(obj.items())
            nodes.extend(b"" for _ in children)
            nodes[index] = struct.pack(">IHII", name(nm) if index else 0, 2, len(children), first) + extra
            for i, (cn, co) in enumerate(children):
                pending.append((first + i, cn, co))
        else:
            content, compress = obj
            blob = struct.pack(">I", len(content)) + zlib.compress(content) if compress else content
            nodes[index] = struct.pack(">IHHHI", name(nm), 1 if compress else 0, 0, 0, len(payload)) + extra
            payload.extend(struct.pack(">I", len(blob)) + blob)
    header_len = 20 + (4 if version >= 3 else 0)
    tree_bytes = b"".join(nodes)
    tree_off = header_len
    data_off = tree_off + len(tree_bytes)
    names_off = data_off + len(payload)
    header = b"qres" + struct.pack(">IIII", version, tree_off, data_off, names_off)
    if version >= 3:
        header += struct.pack(">I", 0)
    return header + tree_bytes + bytes(payload) + bytes(names)


def _eet(files: dict[str, tuple[bytes, bool]]) -> bytes:
    """Build an Eet file (EET_MAGIC_FILE2): {key: (content, flagged compressed)} -> bytes."""
    names = b"".join(k.encode() + b"\0" for k in files)
    head = 12 + 24 * len(files)
    directory, blobs = bytearray(), bytearray()
    name_at = head + sum(len(c) for c, _ in files.values())
    for key, (content, compressed) in files.items():
        directory += struct.pack(">6I", head + len(blobs), len(content), len(content) * (2 if compressed else 1),
                                 name_at, len(key) + 1, 1 if compressed else 0)
        blobs += content
        name_at += len(key) + 1
    return struct.pack(">III", 0x1EE70F42, len(files), 0) + bytes(directory) + bytes(blobs) + names


def _cutout() -> Image.Image:
    """200x100 RGBA: transparent except an opaque red 40x20 box at (100, 30)."""
    im = Image.new("RGBA", (200, 100), (0, 255, 0, 0))
    im.paste((255, 0, 0, 255), (100, 30, 140, 50))
    return im


@pytest.fixture(scope="module")
def fake_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache dir holding one fake .deb, so no apt-get download happens."""
    root = tmp_path_factory.mktemp("deb")
    tree = root / "tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {PKG}\nVersion: {VERSION}\nArchitecture: all\n"
        "Maintainer: Test <test@example.org>\nDescription: fake photos for tests\n"
    )
    (tree / "usr/share/fake").mkdir(parents=True)
    _gradient(1200, 800).save(tree / BIG, quality=90)
    _cutout().save(tree / CUTOUT)
    _gradient(100, 60).save(tree / SMALL)
    (tree / LINK).symlink_to("big.jpg")
    png = io.BytesIO()
    _gradient(300, 200).save(png, format="PNG")
    (tree / BUNDLE).write_bytes(_rcc({IN_BUNDLE: (png.getvalue(), False), IN_BUNDLE_Z: (b"hello" * 50, True)}))
    jpeg = io.BytesIO()
    _gradient(400, 200).save(jpeg, format="JPEG")
    (tree / THEME).parent.mkdir(parents=True)
    (tree / THEME).write_bytes(_eet({IN_THEME: (jpeg.getvalue(), False), "edje/file": (b"\x01" * 30, True)}))
    cache = root / "cache"
    cache.mkdir()
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb not available")
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(cache / f"{PKG}_{VERSION}_all.deb")],
        check=True,
        capture_output=True,
    )
    return cache


def _entry(path: str, name: str, split: str, category: str = "object", **extra: str) -> dict[str, str]:
    return {"package": PKG, "path": path, "category": category, "split": split, "name": name,
            "license": "CC0-1.0", "copyright": "nobody", **extra}


@pytest.fixture()
def sources(tmp_path: Path) -> Path:
    path = tmp_path / "sources.json"
    path.write_text(json.dumps({"photos": [
        _entry(BIG, "big", "train", "landscape"),
        _entry(CUTOUT, "cutout", "val"),
        _entry(SMALL, "small", "test", "animal"),
    ]}))
    return path


def _manifest(out: Path) -> list[dict[str, str]]:
    with (out / "manifest.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


# ----------------------------------------------------------------------- prepare_photo


def test_prepare_photo_downscales_longest_side(tmp_path: Path) -> None:
    src = tmp_path / "wide.jpg"
    _gradient(1200, 800).save(src, quality=95)
    im = prepare_photo(src, max_side=300)
    assert im.mode == "RGB" and im.size == (300, 200)
    tall = prepare_photo(_gradient(400, 1000), max_side=250)
    assert tall.size == (100, 250)


def test_prepare_photo_never_upscales() -> None:
    im = prepare_photo(_gradient(100, 60), max_side=512)
    assert im.size == (100, 60)


def test_prepare_photo_crops_and_composites_cutout() -> None:
    im = prepare_photo(_cutout(), max_side=512)
    assert im.mode == "RGB"
    # cropped to the 40x20 opaque box plus a margin on each side
    margin = round(photos.CUTOUT_MARGIN * 40)
    assert im.size == (40 + 2 * margin, 20 + 2 * margin)
    arr = np.asarray(im).astype(int)
    assert tuple(arr[im.height // 2, im.width // 2]) == (255, 0, 0)
    # the transparent (green!) pixels became the neutral background, not green
    assert tuple(arr[0, 0]) == photos.BACKGROUND


def test_prepare_photo_flatten_and_opaque_rows() -> None:
    flat = prepare_photo(_cutout(), alpha="flatten")
    assert flat.size == (200, 100)
    assert tuple(np.asarray(flat)[0, 0]) == photos.BACKGROUND
    pano = Image.new("RGBA", (64, 40), (0, 0, 255, 0))
    pano.paste((10, 200, 10, 255), (0, 15, 64, 40))  # transparent "sky" above row 15
    out = prepare_photo(pano, alpha="opaque_rows")
    assert out.size == (64, 25)
    assert tuple(np.asarray(out)[0, 0]) == (10, 200, 10)


def test_prepare_photo_palette_transparency() -> None:
    im = _cutout().convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    im.info["transparency"] = im.getpixel((0, 0))
    out = prepare_photo(im)
    assert out.mode == "RGB" and out.size[0] < 200


# ----------------------------------------------------------------------- extract_deb


@needs_dpkg
def test_extract_deb_members_and_symlink(fake_cache: Path, tmp_path: Path) -> None:
    deb = next(fake_cache.glob("*.deb"))
    missing = extract_deb(deb, tmp_path / "x", [BIG, "./" + LINK, "usr/share/fake/nope.png"])
    assert missing == ["usr/share/fake/nope.png"]
    assert (tmp_path / "x" / BIG).read_bytes() == (tmp_path / "x" / LINK).read_bytes()
    assert not (tmp_path / "x" / CUTOUT).exists()
    assert extract_deb(deb, tmp_path / "all") == []
    assert (tmp_path / "all" / CUTOUT).is_file()
    assert photos.deb_version(deb) == VERSION


# ----------------------------------------------------------------------- Qt resources


@pytest.mark.parametrize("version", [1, 2, 3])
def test_read_rcc_lists_files_and_decompresses(version: int) -> None:
    files = {"a/b/c.png": (b"\x89PNG fake", False), "a/z.txt": (b"zzz" * 100, True), "top.bin": (b"", False)}
    got = read_rcc(_rcc(files, version=version))
    assert got == {k: v for k, (v, _) in files.items()}


def test_read_rcc_rejects_garbage() -> None:
    with pytest.raises(PhotoCorpusError, match="Qt resource"):
        read_rcc(b"not an rcc file at all")
    with pytest.raises(PhotoCorpusError, match="Qt resource"):
        read_rcc(_rcc({"x.png": (b"abc" * 10, False)})[:30])


@needs_dpkg
def test_build_corpus_with_archive_members(fake_cache: Path, tmp_path: Path) -> None:
    src = tmp_path / "s.json"
    src.write_text(json.dumps([
        _entry(BUNDLE, "zoo", "train", "animal", member=IN_BUNDLE),
        _entry(BUNDLE, "gone", "val", member="app/nothing.png"),
        _entry(SMALL, "small", "test"),
    ]))
    out = tmp_path / "corpus"
    with pytest.warns(MissingPhotoWarning, match=r"app/nothing\.png"):
        build_photo_corpus(out, cache_dir=fake_cache, max_side=150, sources=src)
    im = Image.open(out / "train" / "animal_zoo.jpg")
    assert im.size == (150, 100)
    rows = {r["file"]: r for r in _manifest(out)}
    assert set(rows) == {"train/animal_zoo.jpg", "test/object_small.jpg"}
    assert rows["train/animal_zoo.jpg"]["original_path"] == f"/{BUNDLE}:/{IN_BUNDLE}"
    # the same archive path with different members is fine; the same member twice is not
    entries = load_sources(src)
    assert entries[0].group == f"{PKG}:{BUNDLE}:{IN_BUNDLE}"
    src.write_text(json.dumps([_entry(BUNDLE, "a", "train", member=IN_BUNDLE),
                               _entry(BUNDLE, "b", "train", member="/" + IN_BUNDLE)]))
    with pytest.raises(PhotoCorpusError, match="listed twice"):
        load_sources(src)


def test_read_eet_returns_stored_entries() -> None:
    blob = _eet({"edje/images/0": (b"\xff\xd8jpeg", False), "edje/file": (b"packed", True)})
    assert read_eet(blob) == {"edje/images/0": b"\xff\xd8jpeg"}  # compressed entries are left out
    with pytest.raises(PhotoCorpusError, match="Eet"):
        read_eet(b"qres" + bytes(40))
    with pytest.raises(PhotoCorpusError, match="truncated"):
        read_eet(blob[:40])


@needs_dpkg
def test_build_with_eet_member_scene_categories_and_rotation(fake_cache: Path, tmp_path: Path) -> None:
    src = tmp_path / "s.json"
    src.write_text(json.dumps([
        _entry(THEME, "hills", "test", "landscape", member=IN_THEME, scene_category="sky/landscape"),
        _entry(SMALL, "small", "val", "person", people=True, rotate=90),
        _entry(CUTOUT, "cutout", "train", scene_category="cutout"),
    ]))
    out = tmp_path / "corpus"
    build_photo_corpus(out, cache_dir=fake_cache, max_side=200, sources=src)
    assert Image.open(out / "test" / "landscape_hills.jpg").size == (200, 100)
    assert Image.open(out / "val" / "person_small.jpg").size == (60, 100)  # turned a quarter clockwise
    assert photo_categories(out) == {
        "test/landscape_hills.jpg": "sky/landscape",
        "val/person_small.jpg": "people",  # the default for fine category person
        "train/object_cutout.jpg": "cutout",
    }
    people = {r["file"]: r["people"] for r in _manifest(out)}
    assert people == {"test/landscape_hills.jpg": "0", "val/person_small.jpg": "1", "train/object_cutout.jpg": "0"}


def test_photo_categories_needs_a_current_manifest(tmp_path: Path) -> None:
    with pytest.raises(PhotoCorpusError, match="manifest.csv"):
        photo_categories(tmp_path)
    (tmp_path / "manifest.csv").write_text("split,file,category\ntrain,train/a_b.jpg,a\n")
    with pytest.raises(PhotoCorpusError, match="rebuild"):
        photo_categories(tmp_path)


# ----------------------------------------------------------------------- build


@needs_dpkg
def test_build_corpus(fake_cache: Path, sources: Path, tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    assert build_photo_corpus(out, cache_dir=fake_cache, max_side=256, sources=sources) == out
    for split in SPLITS:
        assert (out / split).is_dir()
    big = Image.open(out / "train" / "landscape_big.jpg")
    assert big.format == "JPEG" and big.mode == "RGB" and big.size == (256, 171)
    assert Image.open(out / "test" / "animal_small.jpg").size == (100, 60)  # not upscaled
    cut = np.asarray(Image.open(out / "val" / "object_cutout.jpg")).astype(int)
    assert abs(cut[0, 0] - np.array(photos.BACKGROUND)).max() <= 3

    rows = _manifest(out)
    assert list(rows[0]) == list(MANIFEST_COLUMNS)
    by_file = {r["file"]: r for r in rows}
    assert set(by_file) == {"train/landscape_big.jpg", "val/object_cutout.jpg", "test/animal_small.jpg"}
    r = by_file["train/landscape_big.jpg"]
    assert r["split"] == "train" and r["package"] == PKG and r["package_version"] == VERSION
    assert r["original_path"] == "/" + BIG and r["license"] == "CC0-1.0" and r["category"] == "landscape"
    assert (r["width"], r["height"]) == ("256", "171")
    assert not list(out.rglob("*.tmp"))


@needs_dpkg
def test_build_is_idempotent(fake_cache: Path, sources: Path, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "corpus"
    build_photo_corpus(out, cache_dir=fake_cache, max_side=256, sources=sources)
    files = sorted(out.rglob("*.jpg"))
    stamps = {p: p.stat().st_mtime_ns for p in files}
    manifest = (out / "manifest.csv").read_text()

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("nothing should be converted or extracted again")

    monkeypatch.setattr(photos, "prepare_photo", boom)
    monkeypatch.setattr(photos, "download_deb", boom)
    build_photo_corpus(out, cache_dir=fake_cache, max_side=256, sources=sources)
    assert sorted(out.rglob("*.jpg")) == files
    assert {p: p.stat().st_mtime_ns for p in files} == stamps
    assert (out / "manifest.csv").read_text() == manifest


@needs_dpkg
def test_rebuilds_deleted_file_and_drops_stale(fake_cache: Path, sources: Path, tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    build_photo_corpus(out, cache_dir=fake_cache, max_side=256, sources=sources)
    (out / "test" / "animal_small.jpg").unlink()
    data = json.loads(sources.read_text())
    data["photos"] = data["photos"][:1] + data["photos"][2:]  # drop the cutout
    sources.write_text(json.dumps(data))
    build_photo_corpus(out, cache_dir=fake_cache, max_side=256, sources=sources)
    assert (out / "test" / "animal_small.jpg").is_file()
    assert not (out / "val" / "object_cutout.jpg").exists()
    assert {r["file"] for r in _manifest(out)} == {"train/landscape_big.jpg", "test/animal_small.jpg"}


@needs_dpkg
def test_missing_listed_file_warns_and_continues(fake_cache: Path, tmp_path: Path) -> None:
    src = tmp_path / "s.json"
    src.write_text(json.dumps([_entry("usr/share/fake/absent.jpg", "absent", "train"),
                               _entry(SMALL, "small", "test")]))
    out = tmp_path / "corpus"
    with pytest.warns(MissingPhotoWarning, match=r"usr/share/fake/absent\.jpg.*autocolor-fake-photos"):
        build_photo_corpus(out, cache_dir=fake_cache, sources=src)
    assert (out / "test" / "object_small.jpg").is_file()
    assert [r["file"] for r in _manifest(out)] == ["test/object_small.jpg"]

    with pytest.raises(PhotoCorpusError, match=r"usr/share/fake/absent\.jpg"):
        build_photo_corpus(tmp_path / "strict", cache_dir=fake_cache, sources=src, strict=True)


def test_missing_apt_get_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(photos.shutil, "which", lambda name: None)
    with pytest.raises(PhotoCorpusError, match="apt-get not found.*some-package"):
        photos.download_deb("some-package", tmp_path)


def test_failed_download_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(photos.shutil, "which", lambda name: "/usr/bin/apt-get")
    monkeypatch.setattr(
        photos.subprocess, "run",
        lambda *a, **k: subprocess.CompletedProcess(a, 100, b"", b"E: Unable to locate package no-such-pkg\n"),
    )
    with pytest.raises(PhotoCorpusError, match="'no-such-pkg'.*Unable to locate package"):
        photos.download_deb("no-such-pkg", tmp_path)


def test_load_sources_rejects_bad_entries(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    bad_entries = [
        [{"package": PKG, "path": BIG, "split": "train", "license": "x"}],  # no category
        [_entry(BIG, "a", "holdout")],
        [_entry(BIG, "a", "train"), _entry(BIG, "b", "val")],  # same file twice
        [_entry(BIG, "a", "train"), _entry(SMALL, "a", "train")],  # same output twice
        [_entry(BIG, "Bad Name", "train")],
        [_entry(BIG, "a", "train", scene_category="landscape")],  # not a coarse category
        [_entry(BIG, "a", "train", "mystery")],  # no default scene category for it
        [_entry(BIG, "a", "train", people="yes")],
        [_entry(BIG, "a", "train", rotate=45)],
    ]
    for entries in bad_entries:
        path.write_text(json.dumps(entries))
        with pytest.raises(PhotoCorpusError):
            load_sources(path)


# ----------------------------------------------------------------------- committed list


def test_committed_photo_sources_are_valid() -> None:
    path = photos.default_sources_path()
    raw = json.loads(path.read_text(encoding="utf-8"))["photos"]
    for item in raw:
        for key in ("package", "path", "license", "category", "split", "copyright", "group"):
            assert item.get(key), f"{item.get('path')}: missing {key}"
        assert item["split"] in SPLITS
        assert not item["path"].startswith("/")
        assert not item.get("member", "").startswith(("/", ":"))
    entries = load_sources(path)  # also checks duplicates and names
    assert len(entries) >= 300
    paths = [(e.package, e.path, e.member) for e in entries]
    assert len(paths) == len(set(paths))
    per_split = Counter(e.split for e in entries)
    assert all(per_split[s] > 0 for s in SPLITS)
    # a group (variants of one photo/scene/person) never spans two splits
    group_splits: dict[str, set[str]] = {}
    for e in entries:
        group_splits.setdefault(e.group, set()).add(e.split)
    assert all(len(s) == 1 for s in group_splits.values())
    test_categories = {e.category for e in entries if e.split == "test"}
    assert len(test_categories) >= 3
    assert {"animal", "object", "person"} <= test_categories
    assert per_split["train"] > 0.7 * len(entries)
    # every entry says its coarse category; test and val hold whole scenes and people
    assert all(item.get("scene_category") in SCENE_CATEGORIES for item in raw)
    assert all(isinstance(item.get("people"), bool) for item in raw)
    for split in ("val", "test"):
        scenes = Counter(e.scene_category for e in entries if e.split == split)
        assert scenes["sky/landscape"] >= 10 and scenes["people"] >= 3, (split, scenes)
        assert sum(e.people for e in entries if e.split == split) >= 5
