"""``flk agent build``: a missing ``--input`` is "no such file" (it said "cannot tell the format");
a first CSV row of numbers that are not finite (``nan``, ``inf``, ``1e400``) is data, refused as
the same row further down is -- only a row with a cell that is no number at all is a header."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.agent import builder
from flk.impl.core.errors import InvalidInput
from flk.impl.lab.cli import main as flk_main

ROWS = "".join(f"{(i * 37 % 101) / 101},{(i * 53 % 97) / 97}\n" for i in range(40))


def _build(tmp_path, capsys, text: str) -> tuple[int, str]:
    path = tmp_path / "events.csv"
    path.write_text(text)
    code = flk_main(["agent", "build", "--input", str(path), "--shard-id", "s1", "--epoch", "1", "--unsigned"])
    return code, capsys.readouterr().err


def test_a_missing_input_is_no_such_file(tmp_path, capsys):
    missing = tmp_path / "no-such-stream"
    code = flk_main(["agent", "build", "--input", str(missing), "--shard-id", "s1", "--epoch", "1", "--unsigned"])
    err = capsys.readouterr().err
    assert code == 2 and f"--input {missing}: no such file" in err and "format" not in err, err


@pytest.mark.parametrize("first", ["nan,1", "1e400,2", "inf,1", "-Infinity,0.5", "NaN,nan"])
def test_a_first_row_of_non_finite_numbers_is_refused_like_any_row(tmp_path, capsys, first):
    code, err = _build(tmp_path, capsys, first + "\n" + ROWS)
    assert code == 2 and "CSV line 1:" in err and "is not a finite number" in err, err
    code, err = _build(tmp_path, capsys, ROWS + first + "\n")
    assert code == 2 and "CSV line 41:" in err and "is not a finite number" in err, err


@pytest.mark.parametrize("header", ["x,y", "x,1", "time, value"])
def test_a_text_header_is_still_skipped(tmp_path, capsys, header):
    assert _build(tmp_path, capsys, header + "\n" + ROWS)[0] == 0
    with_header = builder.parse_events((header + "\n" + ROWS).encode(), "csv")
    assert with_header.tolist() == builder.parse_events(ROWS.encode(), "csv").tolist()


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


_CELL = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                  st.sampled_from(["nan", "inf", "-inf", "1e400", "x", "time", ""]))


@settings(max_examples=200, deadline=None)
@given(st.lists(_CELL, min_size=2, max_size=2))
def test_a_first_row_is_a_header_exactly_when_some_cell_is_no_number(cells):
    text = ",".join(cells) + "\n" + ROWS
    try:
        points = builder.parse_events(text.encode(), "csv")
    except InvalidInput:
        assert all(_is_number(c) for c in cells), cells  # data, and not finite
        return
    header = not all(_is_number(c) for c in cells)
    assert len(points) == 40 + (0 if header else 1), cells
