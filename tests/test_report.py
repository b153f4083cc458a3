"""The one JSON line every command ends with: floats rounded alike at any depth."""

from __future__ import annotations

import json

import numpy as np

from jaxvision.report import DIGITS, print_json_line, rounded


def test_every_float_is_rounded_wherever_it_sits():
    value = {
        "top1": np.float32(0.1234567891),
        "final": {"image": {"top1": 2 / 3}, "seconds": [1.23456789, np.float64(1e-9)]},
        "count": np.int64(7),
        "flag": True,
        "name": "x",
        "none": None,
        "array": np.array([0.1111111111, 2.0]),
    }
    got = rounded(value)
    assert got == {
        "top1": 0.123457,
        "final": {"image": {"top1": 0.666667}, "seconds": [1.234568, 0.0]},
        "count": 7,
        "flag": True,
        "name": "x",
        "none": None,
        "array": [0.111111, 2.0],
    }
    assert type(got["count"]) is int and got["flag"] is True


def test_print_json_line_is_one_line_of_rounded_json(capsys):
    print_json_line({"loss": np.float32(1) / 3, "stages": [{"top1": 0.5}]})
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    line = json.loads(out)
    assert line == {"loss": round(1 / 3, DIGITS), "stages": [{"top1": 0.5}]}
