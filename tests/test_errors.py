"""One base for the errors a user can fix; the CLI turns each into one line and exit code 2."""

import pytest

from autocolor.checkpoint import CheckpointError
from autocolor.cli import main
from autocolor.data import DatasetError
from autocolor.errors import EXIT_USER_ERROR, AutocolorError
from autocolor.evaluate import EvaluationError
from autocolor.guide import HintError
from autocolor.imageio import ImageError
from autocolor.photos import PhotoCorpusError
from autocolor.train import TrainingError


@pytest.mark.parametrize("error, builtin", [
    (CheckpointError, RuntimeError), (DatasetError, RuntimeError), (TrainingError, RuntimeError),
    (PhotoCorpusError, RuntimeError), (EvaluationError, ValueError), (ImageError, ValueError),
    (HintError, ValueError),
])
def test_user_errors_share_one_base_and_keep_the_builtin_they_had(error, builtin):
    # The builtin base stays: the batch colorizer catches ValueError per file.
    assert issubclass(error, AutocolorError) and issubclass(error, builtin)


def test_cli_reports_a_user_error_in_one_line_with_exit_code_2(tmp_path, capsys):
    code = main(["train", "--model", "cae", "--data", f"folder:{tmp_path}", "--steps", "1", "--out",
                 str(tmp_path / "run"), "--no-progress"])
    assert code == EXIT_USER_ERROR == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
