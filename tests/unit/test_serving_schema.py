"""Request validation against the training schema: every refusal names the column."""

from __future__ import annotations

from typing import Any

import pytest

from modelgate.serving.schema import MAX_ROWS, InputSchema, InvalidInput

METADATA = {
    "features": [
        {"name": "age", "type": "number", "nullable": False, "min": 18.0, "max": 90.0},
        {"name": "income", "type": "number", "nullable": True, "min": 0.0, "max": 1e6},
        {
            "name": "region",
            "type": "string",
            "nullable": False,
            "categories": ["east", "north", "south", "west"],
            "categoriesComplete": True,
        },
    ]
}
ROW = {"age": 40, "income": 52000.5, "region": "north"}


def schema(**options: Any) -> InputSchema:
    return InputSchema.from_metadata(METADATA, **options)


def refused(body: Any, **options: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        schema(**options).columns(body)
    return caught.value


def test_rows_and_columns_give_the_same_table() -> None:
    rows = schema().columns({"instances": [ROW, {**ROW, "income": None}]})
    columns = schema().columns(
        {"inputs": {"age": [40, 40], "income": [52000.5, None], "region": ["north", "north"]}}
    )
    assert rows == columns
    assert list(rows) == ["age", "income", "region"]  # feature order, whatever the body order


def test_the_seed_story_a_negative_age_and_an_unknown_category() -> None:
    negative = refused({"instances": [ROW, {**ROW, "age": -3}]})
    assert (negative.column, negative.row) == ("age", 1)
    assert "outside the range seen in training [18, 90] (accepted: 10.8 to 97.2)" in str(negative)
    unknown = refused({"instances": [{**ROW, "region": "mars"}]})
    assert unknown.column == "region"
    assert "'mars' is not a category seen in training (east, north, south, west)" in str(unknown)
    assert unknown.body() == {"error": str(unknown), "column": "region", "row": 0}


@pytest.mark.parametrize(
    ("row", "column", "text"),
    [
        (
            {**ROW, "zip": "1000"},
            "zip",
            "unknown column 'zip'; the model takes age, income, region",
        ),
        ({"age": 40, "region": "north"}, "income", "missing column 'income'"),
        ({**ROW, "age": "forty"}, "age", "'age' must be a number, got 'forty'"),
        ({**ROW, "age": True}, "age", "'age' must be a number, got True"),
        ({**ROW, "age": float("nan")}, "age", "'age' is missing, and the training data always"),
        ({**ROW, "age": None}, "age", "'age' is missing"),
        ({**ROW, "income": float("inf")}, "income", "'income' must be finite"),
        ({**ROW, "region": 3}, "region", "'region' must be a string, got 3"),
    ],
)
def test_each_bad_value_is_refused_naming_its_column(
    row: dict[str, Any], column: str, text: str
) -> None:
    error = refused({"instances": [row]})
    assert error.column == column
    assert text in str(error)


def test_the_range_has_a_tolerance_but_no_sign_flip() -> None:
    """Fresh data strays a little past the training extremes; a negative
    value where training had none is refused however small."""
    assert schema().columns({"instances": [{**ROW, "age": 95}]})["age"] == [95]
    assert "accepted: 10.8 to 97.2" in str(refused({"instances": [{**ROW, "age": 98}]}))
    income = refused({"instances": [{**ROW, "income": -1}]})
    assert income.column == "income"
    assert "accepted: 0 to 1.1e+06" in str(income)
    assert "accepted: 18 to 90" in str(
        refused({"instances": [{**ROW, "age": 91}]}, range_tolerance=0.0)
    )


def test_out_of_range_may_be_allowed_but_types_never() -> None:
    lenient = schema(check_ranges=False)
    assert lenient.columns({"instances": [{**ROW, "age": 150}]})["age"] == [150]
    with pytest.raises(InvalidInput, match="must be a number"):
        lenient.columns({"instances": [{**ROW, "age": "95"}]})


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ([ROW], "the body must be a JSON object"),
        ({"rows": [ROW]}, 'needs "instances" (rows) or "inputs" (columns)'),
        ({"instances": []}, "non-empty list"),
        ({"instances": [1]}, "instance 0 is not an object"),
        ({"inputs": {"age": [1], "income": [1, 2], "region": ["north"]}}, "same, non-zero"),
        ({"inputs": {"age": 1, "income": [1], "region": ["north"]}}, "'age' must be a list"),
        ({"instances": [ROW] * (MAX_ROWS + 1)}, f"send at most {MAX_ROWS}"),
    ],
)
def test_malformed_bodies_say_what_shape_is_expected(body: Any, text: str) -> None:
    assert text in str(refused(body))


def test_a_truncated_category_list_is_not_enforced() -> None:
    """Schemas list at most 1000 categories: an incomplete list cannot say
    a value is unknown."""
    metadata = {
        "features": [
            {
                "name": "merchant",
                "type": "string",
                "categories": [f"m{i}" for i in range(1000)],
                "categoriesComplete": False,
            }
        ]
    }
    found = InputSchema.from_metadata(metadata).columns({"instances": [{"merchant": "m5000"}]})
    assert found == {"merchant": ["m5000"]}


def test_metadata_without_a_schema_is_refused_at_load() -> None:
    with pytest.raises(ValueError, match="no 'features' schema"):
        InputSchema.from_metadata({"task": "binary"})
