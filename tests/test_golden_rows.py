"""Behaviour kept across refactors: a scan of the bundled samples and of a generated mixed directory (archives
and broken files included) gives the golden rows, column by column (tests/golden_rows.py says how they were
made and how they are compared)."""

import json

import pytest

import golden_rows

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def actual(tmp_path_factory):
    return golden_rows.collect(tmp_path_factory.mktemp("golden"))


@pytest.mark.parametrize("name", ["samples", "mixed"])
def test_rows_equal_the_golden_rows(actual, name):
    expected = json.loads((golden_rows.HERE / "golden" / "scan_rows.json").read_text())[name]
    diffs = golden_rows.compare(expected, actual[name], name)
    assert not diffs, "\n".join(diffs[:20])

