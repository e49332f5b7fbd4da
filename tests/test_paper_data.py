"""paper/: the numbers the tables print as the paper's. Every row has a value per column; every average a table prints
is recomputed from that row's own values (within the printed rounding), as is Table 6's relative drop, so that a
mistyped value fails here."""
import math

import pytest
import yaml

from helpers import ROOT

TABLES = sorted((ROOT / "paper").glob("*.yaml"))


def decimals(value: float) -> int:
    text = repr(float(value))
    return len(text.split(".")[1].rstrip("0")) if "." in text else 0


@pytest.mark.parametrize("path", TABLES, ids=lambda p: p.stem)
def test_rows_are_complete_and_name_their_table(path):
    data = yaml.safe_load(path.read_text())
    assert "Table" in data["source"], path
    assert not any("avg" in str(c) for c in data["columns"])  # an average is a row's `avg`, never a task column
    for row in data["rows"]:
        assert len(row["scores"]) == len(data["columns"]) and all(s is not None for s in row["scores"]), row
        assert len(row.get("sd") or row["scores"]) == len(data["columns"]), row
        if "params" in row:
            assert row["params"] is None or row["params"] >= 0


@pytest.mark.parametrize("path", TABLES, ids=lambda p: p.stem)
def test_every_printed_average_is_the_mean_of_its_row(path):
    data = yaml.safe_load(path.read_text())
    averaged = [row for row in data["rows"] if "avg" in row]
    # YAML reads 85.0 as 85: the printed precision is the table's (its finest value), not one number's
    places = max(decimals(v) for row in averaged for v in [*row["scores"], row["avg"]]) if averaged else 0
    for row in averaged:
        mean = sum(row["scores"]) / len(row["scores"])
        half_unit = 0.5 * 10 ** -places
        assert abs(mean - row["avg"]) <= half_unit + 1e-9, (row["model"], row["method"], mean, row["avg"])
    if path.stem in ("glue", "vision"):  # the tables that print an average print one for every row
        assert len(averaged) == len(data["rows"])


def test_table_6_drops_are_relative_to_the_fourier_basis():
    for row in yaml.safe_load((ROOT / "paper" / "basis.yaml").read_text())["rows"]:
        fourier, *others = row["scores"]
        for score, drop in zip(others, row["drop_percent"]):
            # the scores are rounded to 0.1: the drop computed from them may differ from the printed one by that
            slack = 100 * 0.05 * (1 / fourier + score / fourier ** 2)
            assert math.isclose(100 * (fourier - score) / fourier, drop, abs_tol=0.05 + slack), row
