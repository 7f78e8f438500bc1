"""Reading real-world subscriber CSVs: encoding and delimiter sniffing, the text layer, and the header.

Everything here is pure (no database) and streams: a file is read through one text wrapper. What the header's
columns feed is planned in `columns`; the records become staged rows in `rows`.

Row numbers count the header as row 1 and each record (however many lines its quoted fields span) as one
row, the way a spreadsheet shows the file.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Final

from emailkit.domain.audience.imports.columns import ColumnPlan, plan_columns
from emailkit.domain.errors import DomainError, ErrorCode, FieldError

SAMPLE_BYTES: Final = 64 * 1024
DELIMITERS: Final = (",", ";", "\t", "|")
# Rows the delimiter sniffer looks at: enough to see through a ragged first line or two.
SNIFF_ROWS: Final = 50

ENCODING_LABELS: Final = {
    "utf-8": "UTF-8",
    "utf-8-sig": "UTF-8 with BOM",
    "utf-16": "UTF-16",
    "cp1252": "Windows-1252 (Latin-1)",
}

_FALLBACK_HANDLER: Final = "emailkit-cp1252-fallback"


def _decode_as_cp1252(exc: UnicodeError) -> tuple[str, int]:
    """Bytes a codec cannot decode are read as Windows-1252 (Latin-1 where it leaves a byte undefined).

    A "UTF-8" export with a few Latin-1 cells keeps its accents instead of failing the whole import."""
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    raw = exc.object[exc.start : exc.end]
    chars = []
    for byte in raw:
        try:
            chars.append(bytes([byte]).decode("cp1252"))
        except UnicodeDecodeError:
            chars.append(chr(byte))
    return "".join(chars), exc.end


def _register_fallback() -> None:
    try:
        codecs.lookup_error(_FALLBACK_HANDLER)
    except LookupError:
        codecs.register_error(_FALLBACK_HANDLER, _decode_as_cp1252)


# --- sniffing ---------------------------------------------------------------------------------------------


def sniff_encoding(sample: bytes) -> str:
    """The codec for a file starting with `sample`: a BOM decides, else UTF-8 if the sample is valid UTF-8
    (a sequence cut at the sample's end does not count against it), else Windows-1252."""
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
    except UnicodeDecodeError:
        return "cp1252"
    return "utf-8"


def sniff_delimiter(text: str) -> str:
    """The delimiter among comma, semicolon, tab and pipe that splits the sample most consistently.

    Scored on whole records of `text` (quoted fields may hold delimiters and line breaks): the header must
    split into several columns, and as many following rows as possible must have the header's column count."""
    best: tuple[int, float, int] | None = None
    choice = ","
    for delimiter in DELIMITERS:
        try:
            records = []
            for record in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter):
                if record:
                    records.append(record)
                if len(records) > SNIFF_ROWS:
                    break
        except csv.Error:
            continue
        if not records:
            continue
        width = len(records[0])
        rows = records[1:]
        consistent = sum(1 for r in rows if len(r) == width) / len(rows) if rows else 1.0
        score = (1 if width > 1 else 0, consistent, width)
        if best is None or score > best:
            best, choice = score, delimiter
    return choice


@dataclass(frozen=True)
class Dialect:
    encoding: str
    delimiter: str

    @property
    def encoding_label(self) -> str:
        return ENCODING_LABELS.get(self.encoding, self.encoding)


def sample_text(sample: bytes, encoding: str, *, complete: bool) -> str:
    """The first bytes of a file as text, cut after the last line break unless they are the whole file."""
    _register_fallback()
    text = codecs.getincrementaldecoder(encoding)(errors=_FALLBACK_HANDLER).decode(sample, final=complete)
    text = text.lstrip("\ufeff")
    if not complete:
        cut = max(text.rfind("\n"), text.rfind("\r"))
        text = text[: cut + 1] if cut >= 0 else ""
    return text


def sniff(sample: bytes, *, complete: bool) -> Dialect:
    """Encoding and delimiter of a file from its first bytes (`complete` when that is the whole file)."""
    encoding = sniff_encoding(sample)
    return Dialect(encoding, sniff_delimiter(sample_text(sample, encoding, complete=complete)))


def open_text(binary: IO[bytes], dialect: Dialect) -> io.TextIOWrapper:
    """`binary` as text in the sniffed encoding, line endings untouched (the csv module handles them)."""
    _register_fallback()
    return io.TextIOWrapper(binary, encoding=dialect.encoding, errors=_FALLBACK_HANDLER, newline="")


def is_blank(record: list[str]) -> bool:
    return not any(cell.strip() for cell in record)


def read_header(text: str, dialect: Dialect) -> list[str] | None:
    """The header (the first non-blank record) of a file's sample text, if the sample holds one."""
    try:
        for record in csv.reader(io.StringIO(text, newline=""), delimiter=dialect.delimiter):
            if not is_blank(record):
                return record
    except csv.Error:
        return None
    return None


def inspect_sample(
    sample: bytes, *, complete: bool, column_map: Mapping[str, str], source_field: str
) -> tuple[Dialect, ColumnPlan]:
    """Dialect and column plan of a file from its first `SAMPLE_BYTES` (the whole file if `complete`).

    Raises DomainError for an empty file, a missing header, or a header the column map cannot use."""
    sample = sample[:SAMPLE_BYTES]
    if not sample.strip(b" \t\r\n\x00\xef\xbb\xbf\xff\xfe"):
        raise DomainError(FieldError(source_field, "The file is empty", ErrorCode.REQUIRED))
    dialect = sniff(sample, complete=complete)
    header = read_header(sample_text(sample, dialect.encoding, complete=complete), dialect)
    if header is None:
        raise DomainError.single(
            ErrorCode.INVALID_INPUT,
            f"No header row found in the first {SAMPLE_BYTES // 1024} KiB of the file; the first row must "
            "name the columns",
            source_field,
        )
    return dialect, plan_columns(header, column_map, source_field=source_field)


def count_lines(binary: IO[bytes]) -> int:
    """Line breaks in the file: the row count, before quoted multi-line fields are known about."""
    count = 0
    last = b""
    for block in iter(lambda: binary.read(1 << 20), b""):
        count += block.count(b"\n")
        last = block
    binary.seek(0)
    return count + (1 if last and not last.endswith(b"\n") else 0)
