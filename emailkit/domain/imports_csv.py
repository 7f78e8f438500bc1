"""Reading real-world subscriber CSVs: encoding and delimiter sniffing, header mapping, typed rows.

Everything here is pure (no database) and streams: a file is read through one text wrapper and turned into
one staged row at a time, so memory does not grow with the file.

Row numbers count the header as row 1 and each record (however many lines its quoted fields span) as one
row, the way a spreadsheet shows the file.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, Final

from emailkit.domain.errors import DomainError, ErrorCode, FieldError
from emailkit.domain.subscribers import ATTRIBUTES_MAX_BYTES, NAME_MAX
from emailkit.domain.validation import normalize_email

SAMPLE_BYTES: Final = 64 * 1024
DELIMITERS: Final = (",", ";", "\t", "|")
# Rows the delimiter sniffer looks at: enough to see through a ragged first line or two.
SNIFF_ROWS: Final = 50
MAX_COLUMNS: Final = 500

EMAIL_HEADERS: Final = frozenset({"email", "e-mail", "email address", "e-mail address", "mail"})
NAME_HEADERS: Final = frozenset({"name", "full name"})
IGNORE: Final = "-"
ATTRIBUTES_PREFIX: Final = "attributes."

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


def sniff_delimiter(text: str, *, complete: bool) -> str:
    """The delimiter among comma, semicolon, tab and pipe that splits the sample most consistently.

    Scored on whole records (quoted fields may hold delimiters and line breaks): the header must split into
    several columns, and as many following rows as possible must have the header's column count."""
    if not complete:
        cut = max(text.rfind("\n"), text.rfind("\r"))
        text = text[: cut + 1] if cut >= 0 else text
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


def sniff(sample: bytes, *, complete: bool) -> Dialect:
    """Encoding and delimiter of a file from its first bytes (`complete` when that is the whole file)."""
    encoding = sniff_encoding(sample)
    _register_fallback()
    decoder = codecs.getincrementaldecoder(encoding)(errors=_FALLBACK_HANDLER)
    text = decoder.decode(sample, final=complete)
    if encoding == "utf-16":
        text = text.lstrip("\ufeff")
    return Dialect(encoding, sniff_delimiter(text, complete=complete))


def open_text(binary: IO[bytes], dialect: Dialect) -> io.TextIOWrapper:
    """`binary` as text in the sniffed encoding, line endings untouched (the csv module handles them)."""
    _register_fallback()
    return io.TextIOWrapper(binary, encoding=dialect.encoding, errors=_FALLBACK_HANDLER, newline="")


def read_header(sample: bytes, dialect: Dialect) -> list[str] | None:
    """The header record of a file from its first bytes, or None when the sample holds no full record."""
    text = open_text(io.BytesIO(sample), dialect)
    reader = csv.reader(text, delimiter=dialect.delimiter)
    try:
        for record in reader:
            if record and any(cell.strip() for cell in record):
                return record
    except csv.Error:
        return None
    return None


# --- header mapping ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnPlan:
    """Which column feeds which field; attribute columns carry their key path."""

    width: int
    email: int
    name: int | None
    attributes: tuple[tuple[int, tuple[str, ...]], ...]
    ignored: tuple[str, ...] = ()
    headers: tuple[str, ...] = field(default=())


def _error(message: str, field: str = "columnMap") -> DomainError:
    return DomainError(FieldError(field, message, ErrorCode.INVALID_INPUT))


def attribute_path(target: str) -> tuple[str, ...]:
    """`city` -> ("city",), `address.city` or `attributes.address.city` -> ("address", "city").

    A name with an empty dot-separated part (`Dr.`, `a..b`) is one key, not a path."""
    name = target[len(ATTRIBUTES_PREFIX) :] if target.startswith(ATTRIBUTES_PREFIX) else target
    parts = tuple(name.split("."))
    return parts if all(parts) else (name,)


def check_column_map(value: object) -> dict[str, str]:
    """A columnMap as given by the caller: a JSON object of header -> target."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _error('columnMap must be a JSON object of column header to target (e.g. {"E-Mail": "email"})')
    out: dict[str, str] = {}
    for header, target in value.items():
        target = target.strip()
        if not target:
            raise _error(f"columnMap: empty target for column {header!r}")
        if target not in ("email", "name", IGNORE) and not all(attribute_path(target)):
            raise _error(f"columnMap: {target!r} is not a valid attribute path")
        out[header] = target
    return out


def plan_columns(header: list[str], column_map: Mapping[str, str], *, source_field: str) -> ColumnPlan:
    """Map the header row to fields: `email`, `name`, attribute paths, or ignored columns."""
    stripped = [h.strip() for h in header]
    if len(stripped) > MAX_COLUMNS:
        raise _error(
            f"The file has {len(stripped)} columns; at most {MAX_COLUMNS} are supported", source_field
        )
    by_folded: dict[str, int] = {}
    for index, name in enumerate(stripped):
        if not name:
            continue
        folded = name.casefold()
        if folded in by_folded:
            raise _error(
                f"Column {name!r} appears more than once in the header; rename one of them", source_field
            )
        by_folded[folded] = index

    targets: dict[int, str] = {}
    for key, target in column_map.items():
        index = by_folded.get(key.strip().casefold())
        if index is None:
            raise _error(f"columnMap names {key!r}, which is not a column of the file")
        targets[index] = target

    email: int | None = None
    name: int | None = None
    attributes: list[tuple[int, tuple[str, ...]]] = []
    ignored: list[str] = []
    for index, header_name in enumerate(stripped):
        target = targets.get(index)
        if target is None:
            if not header_name:
                continue
            folded = header_name.casefold()
            if folded in EMAIL_HEADERS and email is None:
                target = "email"
            elif folded in NAME_HEADERS and name is None:
                target = "name"
            else:
                target = ATTRIBUTES_PREFIX + header_name
        if target == IGNORE:
            ignored.append(header_name)
        elif target == "email":
            if email is not None:
                raise _error(f"Columns {stripped[email]!r} and {header_name!r} both map to email")
            email = index
        elif target == "name":
            if name is not None:
                raise _error(f"Columns {stripped[name]!r} and {header_name!r} both map to name")
            name = index
        else:
            attributes.append((index, attribute_path(target)))
    if email is None:
        shown = ", ".join(repr(h) for h in stripped if h) or "none"
        raise _error(
            f"The file has no email column (columns: {shown}); name one with columnMap, "
            'e.g. {"E-Mail": "email"}',
            source_field,
        )
    _check_paths(attributes, stripped)
    return ColumnPlan(
        width=len(header),
        email=email,
        name=name,
        attributes=tuple(attributes),
        ignored=tuple(ignored),
        headers=tuple(stripped),
    )


def _check_paths(attributes: list[tuple[int, tuple[str, ...]]], headers: list[str]) -> None:
    seen: dict[tuple[str, ...], int] = {}
    for index, path in attributes:
        if path in seen:
            raise _error(
                f"Columns {headers[seen[path]]!r} and {headers[index]!r} both map to {'.'.join(path)!r}"
            )
        seen[path] = index
    for path, index in seen.items():
        for depth in range(1, len(path)):
            prefix = path[:depth]
            if prefix in seen:
                raise _error(
                    f"Column {headers[seen[prefix]]!r} sets attribute {'.'.join(prefix)!r}, which column "
                    f"{headers[index]!r} uses as an object"
                )


# --- values -----------------------------------------------------------------------------------------------

# Integers that survive a round trip through JSON and JavaScript unchanged; a leading zero keeps the value a
# string (ZIP codes, phone numbers, ids).
_INT = re.compile(r"-?(?:0|[1-9][0-9]{0,14})")
_FLOAT = re.compile(r"-?(?:0|[1-9][0-9]{0,14})\.[0-9]{1,15}")


def typed_value(text: str) -> Any:
    """A cell as JSON: integers and decimals as numbers, true/false as booleans, anything else as text."""
    first = text[0]
    if first.isdigit() or first == "-":
        if _INT.fullmatch(text):
            return int(text)
        if _FLOAT.fullmatch(text):
            return float(text)
        return text
    if len(text) in (4, 5):
        folded = text.lower()
        if folded == "true":
            return True
        if folded == "false":
            return False
    return text


# An ASCII address every validator accepts: dot-atom local part, hostname labels, a letters-only TLD. What
# it rejects goes through the full validator, so it only has to be a strict subset of what that accepts.
_SIMPLE_EMAIL = re.compile(
    r"[A-Za-z0-9_!#$%&'*+/=?^`{|}~-]+(?:\.[A-Za-z0-9_!#$%&'*+/=?^`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)
_SPECIAL_USE_TLDS = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test"})


def fast_normalize_email(raw: str) -> str:
    """The same result as `normalize_email`, about a hundred times faster for ordinary addresses."""
    value = raw.strip()
    if (
        len(value) <= 254
        and value.isascii()
        and _SIMPLE_EMAIL.fullmatch(value)
        and "--" not in value.partition("@")[2]
        and value.rpartition(".")[2].lower() not in _SPECIAL_USE_TLDS
        and value.index("@") <= 64
    ):
        return value.lower()
    return normalize_email(value)


def email_hash(email: str) -> str:
    """How suppressions remember an address after erasure: sha256 hex of the normalised address."""
    return hashlib.sha256(email.encode()).hexdigest()


# --- rows -------------------------------------------------------------------------------------------------

# (row number, email, email hash, name, attributes JSON, error); email and hash are None on error rows.
StagedRow = tuple[int, str | None, str | None, str, str, str | None]


@dataclass
class ParseStats:
    rows: int = 0
    invalid: int = 0


def _set_path(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = target
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[path[-1]] = value


def parse_rows(text: IO[str], dialect: Dialect, plan: ColumnPlan, stats: ParseStats) -> Iterator[StagedRow]:
    """Every data record of `text` (header already consumed) as a staged row, valid or with its error.

    Blank records are skipped and not counted."""
    reader = csv.reader(text, delimiter=dialect.delimiter)
    email_at = plan.email
    name_at = plan.name
    attribute_columns = plan.attributes
    width = plan.width
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
    row_no = 1
    while True:
        row_no += 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            stats.rows += 1
            stats.invalid += 1
            yield (row_no, None, None, "", "{}", f"unreadable row: {exc}")
            continue
        size = len(record)
        if size == 0 or (size == 1 and not record[0].strip()):
            continue
        stats.rows += 1
        error = None
        if size > width:
            # Trailing empty cells (a delimiter at the end of the line) are harmless.
            if any(cell.strip() for cell in record[width:]):
                error = f"{size} columns, but the header has {width}"
        email = None
        name = ""
        attributes = "{}"
        if error is None:
            try:
                email = fast_normalize_email(record[email_at] if email_at < size else "")
            except DomainError as exc:
                error = exc.errors[0].message
        if error is None and name_at is not None and name_at < size:
            name = record[name_at].strip()
            if len(name) > NAME_MAX:
                error = f"name: must be at most {NAME_MAX} characters"
            elif "\x00" in name:
                error = "name contains a NUL character"
        if error is None and attribute_columns:
            values: dict[str, Any] = {}
            for index, path in attribute_columns:
                if index < size:
                    cell = record[index].strip()
                    if cell:
                        if "\x00" in cell:
                            error = "a cell contains a NUL character"
                            break
                        if len(path) == 1:
                            values[path[0]] = typed_value(cell)
                        else:
                            _set_path(values, path, typed_value(cell))
            if error is None and values:
                attributes = dumps(values)
                if (
                    len(attributes) > ATTRIBUTES_MAX_BYTES // 4
                    and len(attributes.encode()) > ATTRIBUTES_MAX_BYTES
                ):
                    error = f"attributes: must be at most {ATTRIBUTES_MAX_BYTES} bytes in total"
        if error is not None or email is None:
            stats.invalid += 1
            yield (row_no, None, None, "", "{}", error or "Email is required")
        else:
            yield (row_no, email, email_hash(email), name, attributes, None)
