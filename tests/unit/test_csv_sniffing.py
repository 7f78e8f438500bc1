"""Reading real-world CSVs: encoding and delimiter sniffing, header mapping, typed rows (no database)."""

from __future__ import annotations

import codecs
import io
import json
from pathlib import Path

import pytest

from emailkit.domain.audience.imports.columns import check_column_map, plan_columns
from emailkit.domain.audience.imports.csvfile import (
    SAMPLE_BYTES,
    Dialect,
    inspect_sample,
    open_text,
    sniff,
    sniff_delimiter,
    sniff_encoding,
)
from emailkit.domain.audience.imports.rows import (
    ParseStats,
    StagedRow,
    _CellCache,
    fast_normalize_email,
    json_cell,
    parse_rows,
)
from emailkit.domain.errors import DomainError, ErrorCode
from emailkit.domain.validation import normalize_email

FIXTURES = Path(__file__).parents[1] / "fixtures"


def parse(
    data: bytes, column_map: dict[str, str] | None = None
) -> tuple[Dialect, list[StagedRow], ParseStats]:
    dialect, plan = inspect_sample(data, complete=True, column_map=column_map or {}, source_field="file")
    stats = ParseStats()
    rows = list(parse_rows(open_text(io.BytesIO(data), dialect), dialect, plan, stats))
    return dialect, rows, stats


def attributes(rows: list[StagedRow]) -> dict[str, object]:
    return {r[1]: json.loads(r[3]) for r in rows if r[1] is not None}


# --- encoding ---------------------------------------------------------------------------------------------


def test_encodings_are_told_apart() -> None:
    text = "email;name\nzoe@example.com;Zoë\n"
    assert sniff_encoding(codecs.BOM_UTF8 + text.encode()) == "utf-8-sig"
    assert sniff_encoding(text.encode()) == "utf-8"
    assert sniff_encoding(text.encode("cp1252")) == "cp1252"
    assert sniff_encoding(text.encode("utf-16")) == "utf-16"


def test_a_multibyte_character_cut_at_the_sample_end_is_still_utf8() -> None:
    data = ("email\n" + "é" * 10).encode()
    assert sniff_encoding(data[:-1]) == "utf-8"


def test_latin1_file_keeps_its_accents_and_euro_sign() -> None:
    dialect, rows, stats = parse((FIXTURES / "import_latin1.csv").read_bytes())
    assert dialect == Dialect("cp1252", ",")
    assert stats.invalid == 0
    assert [(r[1], r[2]) for r in rows] == [
        ("jose@example.com", "José García"),
        ("zoe@example.com", "Zoë Ørsted"),
    ]
    assert attributes(rows)["jose@example.com"] == {"city": "Málaga", "note": "Café €5"}


def test_stray_latin1_bytes_after_the_sample_of_a_utf8_file_are_read_as_windows_1252() -> None:
    head = "email,city\n" + "".join(f"u{i}@example.com,Köln\n" for i in range(4000))
    assert len(head.encode()) > SAMPLE_BYTES
    data = head.encode() + b"b@example.com,M\xfcnchen\n"
    dialect, plan = inspect_sample(data[:SAMPLE_BYTES], complete=False, column_map={}, source_field="file")
    assert dialect.encoding == "utf-8"
    rows = list(parse_rows(open_text(io.BytesIO(data), dialect), dialect, plan, ParseStats()))
    found = attributes(rows)
    assert found["u0@example.com"] == {"city": "Köln"}
    assert found["b@example.com"] == {"city": "München"}


def test_utf16_tab_separated_export() -> None:
    # What Excel writes as "Unicode text".
    data = "email\tname\r\nzoe@example.com\tZoë\r\n".encode("utf-16")
    dialect, rows, _ = parse(data)
    assert dialect == Dialect("utf-16", "\t")
    assert [(r[1], r[2]) for r in rows] == [("zoe@example.com", "Zoë")]


# --- delimiter --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_each_delimiter_is_detected(delimiter: str) -> None:
    lines = ["email", "name", "city"], ["a@example.com", "Ann", "Rome"], ["b@example.com", "Bo", "Oslo"]
    text = "".join(delimiter.join(line) + "\n" for line in lines)
    assert sniff_delimiter(text) == delimiter


def test_delimiters_inside_quotes_do_not_fool_the_sniffer() -> None:
    text = 'email;name;note\na@example.com;"Doe, Jane";"a, b, c"\nb@example.com;"Roe, Rick";"x, y"\n'
    assert sniff_delimiter(text) == ";"


def test_a_single_column_file_defaults_to_comma() -> None:
    assert sniff(b"email\na@example.com\nb@example.com\n", complete=True).delimiter == ","


# --- header mapping ---------------------------------------------------------------------------------------


def test_email_and_name_headers_are_recognised_and_the_rest_become_attributes() -> None:
    plan = plan_columns([" E-Mail ", "Full Name", "City", "address.zip", "", "Dr."], {}, source_field="file")
    assert plan.email == 0
    assert plan.name == 1
    assert plan.attributes == ((2, ("City",)), (3, ("address", "zip")), (5, ("Dr.",)))


def test_column_map_renames_ignores_and_nests() -> None:
    plan = plan_columns(
        ["Mail", "Vorname", "Stadt", "Intern", "email"],
        check_column_map(
            {"Mail": "email", "vorname": "name", "Stadt": "attributes.address.city", "Intern": "-"}
        ),
        source_field="file",
    )
    assert plan.email == 0
    assert plan.name == 1
    # The mapped column replaces the one its header would have picked; that one is an attribute now.
    assert plan.attributes == ((2, ("address", "city")), (4, ("email",)))
    assert plan.ignored == ("Intern",)


@pytest.mark.parametrize(
    ("header", "column_map", "message"),
    [
        (["name", "city"], {}, "The file has no email column (columns: 'name', 'city')"),
        (["email", "Email"], {}, "Column 'Email' appears more than once in the header"),
        (["a", "b"], {"a": "email", "b": "email"}, "Columns 'a' and 'b' both map to email"),
        (["email", "x"], {"y": "name"}, "columnMap names 'y', which is not a column of the file"),
        (["email", "a", "a.b"], {}, "Column 'a' sets attribute 'a', which column 'a.b' uses as an object"),
        (["email", "a", "b"], {"b": "a"}, "Columns 'a' and 'b' both map to 'a'"),
    ],
)
def test_unusable_headers_are_explained(header: list[str], column_map: dict[str, str], message: str) -> None:
    with pytest.raises(DomainError) as raised:
        plan_columns(header, check_column_map(column_map), source_field="file")
    assert raised.value.errors[0].message.startswith(message)
    assert raised.value.errors[0].code is ErrorCode.INVALID_INPUT


@pytest.mark.parametrize("value", [["email"], {"a": 1}, {"a": ""}, "x"])
def test_malformed_column_maps_are_refused(value: object) -> None:
    with pytest.raises(DomainError) as raised:
        check_column_map(value)
    assert raised.value.errors[0].field == "columnMap"


def test_empty_file_and_missing_header() -> None:
    with pytest.raises(DomainError) as empty:
        inspect_sample(codecs.BOM_UTF8 + b"\r\n", complete=True, column_map={}, source_field="csv")
    assert (empty.value.errors[0].field, empty.value.errors[0].code) == ("csv", ErrorCode.REQUIRED)
    with pytest.raises(DomainError) as no_line:
        inspect_sample(b"email" * 20000, complete=False, column_map={}, source_field="file")
    assert "No header row found" in no_line.value.errors[0].message


# --- values -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "value"),
    [
        ("42", 42),
        ("-7", -7),
        ("3.25", 3.25),
        ("TRUE", True),
        ("false", False),
        ("007", "007"),
        ("+4930123", "+4930123"),
        ("1e5", "1e5"),
        ("1.", "1."),
        ("12345678901234567", "12345678901234567"),
        ("yes", "yes"),
        ('say "hi"', 'say "hi"'),
        ("Zoë", "Zoë"),
    ],
)
def test_cells_are_typed(cell: str, value: object) -> None:
    assert json.loads(json_cell(cell)) == value


ADDRESSES = [
    "john.doe@example.com",
    "John.Doe+tag@Example.COM",
    "o'brien@example.ie",
    "a@b.co",
    "x@sub-domain.example.org",
    "weird!#$%&'*+/=?^_`{|}~-@example.com",
    "a@example.test",
    "a@example.LOCAL",
    "a@localhost",
    "a@example",
    "a@-example.com",
    "a@example-.com",
    "a@ex--ample.com",
    "a@xn--bcher-kva.example",
    "a..b@example.com",
    ".a@example.com",
    "a@example.c0m",
    "a" * 64 + "@example.com",
    "a" * 65 + "@example.com",
    "a@" + "b" * 63 + ".com",
    "a@" + "b" * 64 + ".com",
    "a@" + ".".join(["b" * 60] * 4) + ".com",
    "jörg@example.de",
    "jorg@exämple.de",
    "user@[192.168.0.1]",
    '"quoted"@example.com',
    "  padded@example.com ",
    "two@@example.com",
    "",
]


@pytest.mark.parametrize("address", ADDRESSES)
def test_fast_email_check_agrees_with_the_full_validator(address: str) -> None:
    try:
        expected: str | None = normalize_email(address)
    except DomainError:
        expected = None
    try:
        got: str | None = fast_normalize_email(address)
    except DomainError:
        got = None
    assert got == expected


# --- rows -------------------------------------------------------------------------------------------------


def test_the_messy_fixture_row_by_row() -> None:
    dialect, rows, stats = parse((FIXTURES / "import_messy.csv").read_bytes())
    assert dialect == Dialect("utf-8-sig", ";")
    # Row numbers as a spreadsheet shows them: header is row 1, the blank row 5 is skipped but counted.
    assert [(r[0], r[1], r[4]) for r in rows] == [
        (2, "anna@example.com", None),
        (3, "bob@example.com", None),
        (4, None, "Invalid email address: An email address must have an @-sign."),
        (6, "anna@example.com", None),
        (7, None, "Invalid email address: The part after the @-sign is not valid. It should have a period."),
        (8, "eve@example.org", None),
        (9, None, "8 columns, but the header has 7"),
        (10, "gina@example.com", None),
        (11, "hank@example.com", None),
        (12, "ivy@example.com", None),
        (13, "jon@example.com", None),
    ]
    assert (stats.rows, stats.invalid) == (11, 3)
    # The first row of each address (repeats are the database's to report).
    by_email = {r[1]: r for r in reversed(rows) if r[1]}
    assert by_email["bob@example.com"][2] == 'Bob "the builder"'
    assert json.loads(by_email["bob@example.com"][3]) == {
        "City": "Paris",
        "VIP": False,
        "Notes": "Line one\r\nLine two",
    }
    assert json.loads(by_email["anna@example.com"][3]) == {
        "City": "Berlin",
        "Age": 34,
        "VIP": True,
        "Signup": "2024-01-05",
    }
    assert json.loads(by_email["eve@example.org"][3]) == {"City": "Köln; Porz", "Age": "007", "VIP": "yes"}
    assert json.loads(by_email["gina@example.com"][3]) == {"Age": -12.5}


def test_rows_with_problems_are_reported_not_raised() -> None:
    long_name = "n" * 256
    data = (
        "email,name,note\n"
        f"a@example.com,{long_name},x\n"
        "b@example.com,B\x00b,x\n"
        "c@example.com,C,\x00\n"
        ",nobody,x\n"
        "d@example.com,D\n"
    ).encode()
    _, rows, stats = parse(data)
    assert [(r[0], r[4]) for r in rows] == [
        (2, "name: must be at most 255 characters"),
        (3, "contains a NUL character"),
        (4, "contains a NUL character"),
        (5, "Email is required"),
        (6, None),
    ]
    assert stats.invalid == 4


def test_an_oversized_field_fails_its_row_and_parsing_goes_on() -> None:
    data = ("email,note\n" + 'a@example.com,"' + "x" * 200_000 + '"\n' + "b@example.com,ok\n").encode()
    _, rows, _ = parse(data)
    assert rows[0][4] is not None and rows[0][4].startswith("unreadable row: field larger than field limit")
    assert rows[-1][1:3] == ("b@example.com", "")
    assert json.loads(rows[-1][3]) == {"note": "ok"}


def test_nested_attribute_paths_build_objects() -> None:
    data = b"email,address.city,address.zip,tags\na@example.com,Rome,00100,\n"
    _, rows, _ = parse(data)
    assert attributes(rows) == {"a@example.com": {"address": {"city": "Rome", "zip": "00100"}}}


def test_attributes_over_the_size_limit_fail_the_row() -> None:
    data = ("email,a,b,c,d,e\na@example.com," + ",".join(["é" * 13_000] * 5) + "\n").encode()
    _, rows, _ = parse(data)
    assert rows[0][4] == "attributes: must be at most 65536 bytes in total"


def test_the_cell_cache_keeps_short_repeated_cells_and_stays_bounded() -> None:
    cache = _CellCache('"city":', columns=1000)
    assert cache["Berlin"] == '"city":"Berlin"' and "Berlin" in cache
    assert cache["42"] == '"city":42'
    long_text = "x" * (_CellCache.TEXT_MAX + 1)
    assert cache[long_text] == '"city":"' + long_text + '"'
    assert long_text not in cache
    for i in range(cache.limit + 5):
        cache[f"v{i}"]
    assert len(cache) <= cache.limit
