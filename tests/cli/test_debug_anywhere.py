"""``--debug`` is accepted after the command too, and then shows the traceback of an OServe error."""

from __future__ import annotations

import pytest

from oserve.cli.main import main
from oserve.errors import OServeError


def test_debug_after_the_command_reraises(tmp_path):
    missing = str(tmp_path / "none.csv")
    assert main(["trace", "stats", missing]) == 1
    with pytest.raises(OServeError):
        main(["trace", "stats", missing, "--debug"])


def test_version_prints(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("oserve ")
