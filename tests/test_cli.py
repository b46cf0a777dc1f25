"""cli.stage_main: the project's errors (errors.MambaPruneError) become one line and exit status 2; anything else
is a bug and keeps its traceback (it used to print `error: too many values to unpack` and exit 2)."""

import subprocess
import sys

import pytest

from mambaprune.cli import stage_main
from mambaprune.errors import CheckpointError, ConfigError, DataError, MambaPruneError, TrainingError


@pytest.mark.parametrize("error", [ConfigError, DataError, CheckpointError, TrainingError])
def test_a_project_error_is_one_line_and_exit_status_2(error, capsys):
    def main():
        raise error("what is wrong; what to do")

    with pytest.raises(SystemExit) as exit_:
        stage_main(main)
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "error: what is wrong; what to do\n"
    assert issubclass(error, MambaPruneError)


@pytest.mark.parametrize("error", [ValueError, FileNotFoundError, KeyError, RuntimeError])
def test_any_other_error_propagates(error):
    def main():
        raise error("an internal bug")

    with pytest.raises(error):
        stage_main(main)


def test_an_internal_value_error_in_a_stage_keeps_its_traceback(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text("from mambaprune.cli import stage_main\n\n\ndef main():\n    a, b = [1, 2, 3]\n\n\n"
                      "stage_main(main)\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr  # Python's own exit status for an uncaught exception, not 2
    assert "Traceback (most recent call last)" in proc.stderr and 'stage.py", line 5, in main' in proc.stderr
    assert proc.stderr.rstrip().endswith("ValueError: too many values to unpack (expected 2)")
    assert "error: " not in proc.stderr.splitlines()[0]
