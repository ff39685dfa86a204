"""read_structured: every way a small config file can be unreadable becomes the caller's error, naming the file."""

from __future__ import annotations

import pytest

from oserve.errors import CalibrationError, SpecError
from oserve.files import read_structured


@pytest.mark.parametrize(
    ("make", "syntax", "message"),
    [
        (lambda p: None, "yaml", "not found"),
        (lambda p: p.mkdir(), "yaml", "cannot read"),
        (lambda p: p.write_bytes(b"\xff\xfe\x00bad"), "yaml", "cannot read"),
        (lambda p: p.write_text("{unclosed: [1, 2"), "yaml", "not valid YAML"),
        (lambda p: p.write_text('{"a": 1,}'), "json", "not valid JSON"),
    ],
)
@pytest.mark.parametrize("error", [SpecError, CalibrationError])
def test_unreadable_files_raise_the_callers_error(tmp_path, make, syntax, message, error) -> None:
    path = tmp_path / "f.cfg"
    make(path)
    with pytest.raises(error, match=message) as info:
        read_structured(path, what="thing", error=error, syntax=syntax)
    assert str(path) in str(info.value)


def test_yaml_reads_json_too(tmp_path) -> None:
    path = tmp_path / "d.json"
    path.write_text('{"model": "m", "replicas": [1, 2]}')
    assert read_structured(path, what="x", error=SpecError) == {"model": "m", "replicas": [1, 2]}


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_exponent_numbers_without_a_dot_are_floats(tmp_path, suffix) -> None:
    """``1e-3`` and ``5e-324`` are numbers in JSON and YAML 1.2; PyYAML's YAML 1.1 reads them as strings, so a
    deployment file's router parameter ``interval_s: 5e-324`` came back as ``'5e-324'`` (found by the round-trip
    property test). A ``.json`` file is now read as JSON, and YAML reads such exponents as floats."""
    path = tmp_path / f"f{suffix}"
    path.write_text('{"interval_s": 5e-324, "b": 1e-3, "c": "1e3", "d": 7}')
    assert read_structured(path, what="thing", error=SpecError) == {
        "interval_s": 5e-324,
        "b": 1e-3,
        "c": "1e3",
        "d": 7,
    }
