"""The install: what the core needs, what the extras add, and what ships in the wheel."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from autocolor import cli
from autocolor.demo import samples_dir

REPO = Path(__file__).resolve().parents[1]
TRAINING_ONLY = ("tensorboard", "torchmetrics", "torchvision")


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _names(requirements: list[str]) -> set[str]:
    return {r.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip().lower() for r in requirements}


def test_core_install_leaves_training_and_evaluation_packages_to_extras():
    project = _project()
    core = _names(project["dependencies"])
    assert not core & set(TRAINING_ONLY)
    assert {"torch", "numpy", "pillow", "safetensors", "tqdm"} <= core
    extras = project["optional-dependencies"]
    assert set(TRAINING_ONLY) <= _names(extras["train"])
    assert {"torchmetrics", "torchvision", "matplotlib"} <= _names(extras["eval"])
    for name in ("web", "onnx", "video", "faces", "eval", "dev", "train"):
        assert name in extras
    (everything,) = extras["all"]
    assert set(everything.split("[")[1].rstrip("]").split(",")) == set(extras) - {"all"}


def test_samples_live_in_the_package_with_their_licenses():
    assert samples_dir() == Path(cli.__file__).resolve().parent / "samples"
    assert (samples_dir() / "LICENSES.md").is_file()
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "samples/*.jpg" in package_data["autocolor"] and "samples/LICENSES.md" in package_data["autocolor"]
    assert not (REPO / "samples").exists()  # one copy, the one that is installed


@pytest.mark.slow
def test_core_colorize_path_imports_no_training_package():
    code = (
        "import sys, numpy as np\n"
        "from autocolor.inference import Colorizer\n"
        "out = Colorizer.load().colorize(np.tile(np.arange(48, dtype=np.uint8) * 5, (32, 1)))\n"
        "assert out.shape == (32, 48, 3), out.shape\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {TRAINING_ONLY!r}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**_env(), "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def _env() -> dict:
    import os

    return {**os.environ, "PYTHONPATH": str(REPO / "src")}


@pytest.mark.slow
def test_wheel_holds_the_weights_and_samples(tmp_path):
    pytest.importorskip("setuptools")
    source = tmp_path / "source"  # a copy, so the build leaves nothing in the checkout
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "dist").glob("autocolor-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for photo in samples_dir().iterdir():
        assert f"autocolor/samples/{photo.name}" in names
    assert "autocolor/weights/default/model.safetensors" in names
    assert "autocolor/weights/default/config.json" in names


def test_a_missing_extra_is_one_line_naming_it(monkeypatch, capsys):
    def needs(module):
        def run(args):
            raise ModuleNotFoundError(f"No module named {module!r}", name=module)
        return run

    for command, module, extra in (("train", "tensorboard", "train"), ("train", "torchvision", "train"),
                                   ("evaluate", "torchmetrics", "eval"), ("serve", "gradio", "web"),
                                   ("serve", "fastapi", "web"), ("export", "onnx", "onnx")):
        monkeypatch.setitem(cli.COMMANDS, command, needs(module))
        argv = {"train": ["train", "--model", "cae", "--data", "x", "--out", "y", "--steps", "1"],
                "evaluate": ["evaluate", "--models", "default", "--data", "x"], "serve": ["serve"],
                "export": ["export", "--onnx", "x.onnx"]}[command]
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"pip install 'autocolor[{extra}]'" in err and module in err, err


def test_a_missing_module_of_no_extra_keeps_its_traceback(monkeypatch):
    def run(args):
        raise ModuleNotFoundError("No module named 'autocolor.nothing'", name="autocolor.nothing")

    monkeypatch.setitem(cli.COMMANDS, "models", run)
    with pytest.raises(ModuleNotFoundError):
        cli.main(["models"])
