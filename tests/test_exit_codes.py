"""Exit codes as errors.py documents them, seen from the shell."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autocolor.cli import main

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_a_usage_error_is_one_line_and_exit_status_2(tmp_path, capsys):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(SystemExit, match="cannot write .gif") as stop:
        main(["colorize", str(tmp_path / "a.png"), "-o", str(tmp_path / "a.gif"), "--model", "levin"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: -o ") and err.count("\n") == 1


@pytest.mark.slow
def test_exit_statuses_from_the_shell(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}

    def status(*args: str) -> tuple[int, str]:
        done = subprocess.run([sys.executable, "-m", "autocolor", *args], capture_output=True, text=True, env=env,
                              timeout=300)
        return done.returncode, done.stderr

    code, err = status("colorize", str(tmp_path / "a.png"), "-o", str(tmp_path / "a.gif"))
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    code, err = status("colorize", str(tmp_path / "a.png"), "-o", "-", "--json")
    assert code == 2 and "--json prints to stdout" in err
    code, err = status("colorize", str(tmp_path), "-o", str(tmp_path / "out"), "--model", "levin")
    assert code == 1 and "broken.png" in err  # one file failed, the other was written
    assert (tmp_path / "out" / "a.png").is_file()
    code, err = status("colorize", str(tmp_path / "a.png"), "-o", str(tmp_path / "out2"), "--saturation", "9")
    assert code == 2 and "must be a number from 0 to 4" in err
