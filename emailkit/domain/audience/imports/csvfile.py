"""Reading real-world subscriber CSVs: encoding and delimiter sniffing, header mapping, typed rows.

Everything here is pure (no database) and streams: a file is read through one text wrapper and turned into
one staged row at a time, so memory does not grow with the file.

Row numbers count the header as row 1 and each record (however many lines its quoted fields span) as one
row, the way a spreadsheet shows the file.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from typing import IO, Any, Final

from emailkit.domain.audience.subscribers import ATTRIBUTES_MAX_BYTES, NAME_MAX
from emailkit.domain.errors import DomainError, ErrorCode, FieldError
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


def _is_blank(record: list[str]) -> bool:
    return not any(cell.strip() for cell in record)


def read_header(text: str, dialect: Dialect) -> list[str] | None:
    """The header (the first non-blank record) of a file's sample text, if the sample holds one."""
    try:
        for record in csv.reader(io.StringIO(text, newline=""), delimiter=dialect.delimiter):
            if not _is_blank(record):
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
        raise _error(
            f"No header row found in the first {SAMPLE_BYTES // 1024} KiB of the file; the first row must "
            "name the columns",
            source_field,
        )
    return dialect, plan_columns(header, column_map, source_field=source_field)


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
    for position, header_name in enumerate(stripped):
        if not header_name:
            continue
        folded = header_name.casefold()
        if folded in by_folded:
            raise _error(
                f"Column {header_name!r} appears more than once in the header; rename one of them",
                source_field,
            )
        by_folded[folded] = position

    targets: dict[int, str] = {}
    for key, target in column_map.items():
        found = by_folded.get(key.strip().casefold())
        if found is None:
            raise _error(f"columnMap names {key!r}, which is not a column of the file")
        targets[found] = target
    # A column the map names as email (or name) replaces the one that would be picked by its header.
    claimed = set(targets.values())

    email: int | None = None
    name: int | None = None
    attributes: list[tuple[int, tuple[str, ...]]] = []
    ignored: list[str] = []
    for index, header_name in enumerate(stripped):
        mapped = targets.get(index)
        if mapped is not None:
            target = mapped
        else:
            if not header_name:
                continue
            folded = header_name.casefold()
            if folded in EMAIL_HEADERS and email is None and "email" not in claimed:
                target = "email"
            elif folded in NAME_HEADERS and name is None and "name" not in claimed:
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

# Integers that survive a round trip through JSON and JavaScript unchanged, and plain decimals; a leading zero
# keeps the value a string (ZIP codes, phone numbers, ids). Every match is valid JSON as it stands.
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]{0,14})(?:\.[0-9]{1,15})?")


def json_cell(text: str) -> str:
    """A non-empty cell as a JSON value: numbers and true/false typed (case-insensitive), else a string."""
    first = text[0]
    if (first.isdigit() or first == "-") and _NUMBER.fullmatch(text):
        return text
    if len(text) in (4, 5) and first in "tTfF":
        folded = text.lower()
        if folded in ("true", "false"):
            return folded
    return encode_basestring(text)


# An ASCII address every validator accepts: local part of at most 64 characters in dot-atom form, hostname
# labels without "--", a letters-only TLD that is not special-use. Anything else goes through the full
# validator, so this only has to be a strict subset of what that accepts (with the same normal form).
_SIMPLE_EMAIL = re.compile(
    r"(?=[^@]{1,64}@)"
    r"[A-Za-z0-9_!#$%&'*+/=?^`{|}~-]+(?:\.[A-Za-z0-9_!#$%&'*+/=?^`{|}~-]+)*"
    r"@(?!.*--)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"(?!(?i:arpa|invalid|local|localhost|onion|test)\Z)[A-Za-z]{2,63}"
)


def fast_normalize_email(raw: str) -> str:
    """The same result as `normalize_email`, about a hundred times faster for ordinary addresses."""
    value = raw.strip()
    if len(value) <= 254 and _SIMPLE_EMAIL.fullmatch(value):
        return value.lower()
    return normalize_email(value)


def _object_json(pairs: list[tuple[tuple[str, ...], str]]) -> str:
    """JSON object text from (key path, JSON value) pairs whose paths never conflict (see plan_columns)."""
    tree: dict[str, Any] = {}
    for path, value in pairs:
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value

    def emit(node: dict[str, Any]) -> str:
        return (
            "{"
            + ",".join(
                encode_basestring(k) + ":" + (emit(v) if isinstance(v, dict) else v) for k, v in node.items()
            )
            + "}"
        )

    return emit(tree)


class _CellCache(dict[str, str]):
    """Cell text -> `prefix` + its JSON value, remembered: attribute columns repeat the same few values row
    after row. Only short cells are kept (long text rarely repeats), at most `limit` of them, cleared when
    full: memory stays bounded however wide or varied the file."""

    TEXT_MAX = 64
    ENTRIES_IN_ALL = 200_000

    def __init__(self, prefix: str = "", *, columns: int = 1) -> None:
        super().__init__()
        self.prefix = prefix
        self.limit = max(256, self.ENTRIES_IN_ALL // max(1, columns))

    def __missing__(self, text: str) -> str:
        value = self.prefix + json_cell(text)
        if len(text) <= self.TEXT_MAX:
            if len(self) >= self.limit:
                self.clear()
            self[text] = value
        return value


# --- rows -------------------------------------------------------------------------------------------------

# (row number, email, name, attributes as JSON text, error); email is None exactly on error rows.
StagedRow = tuple[int, str | None, str, str, str | None]


@dataclass
class ParseStats:
    rows: int = 0
    invalid: int = 0


def parse_rows(text: IO[str], dialect: Dialect, plan: ColumnPlan, stats: ParseStats) -> Iterator[StagedRow]:
    """Every data record of `text` as a staged row, valid or with its error; the header (the first non-blank
    record) is read and skipped here, blank records are skipped and not counted.

    This is the hot loop of an import: keep it lean."""
    reader = csv.reader(text, delimiter=dialect.delimiter)
    row_no = 0
    for record in reader:
        row_no += 1
        if not _is_blank(record):
            break
    else:
        return
    email_at = plan.email
    name_at = plan.name
    width = plan.width
    nested = any(len(path) > 1 for _, path in plan.attributes)
    # Flat attributes are written as text directly: '"key":value' from each column's cache, no dict and no
    # json.dumps per row.
    columns = len(plan.attributes)
    flat = tuple(
        (index, _CellCache(encode_basestring(path[0]) + ":", columns=columns))
        for index, path in plan.attributes
    )
    paths = plan.attributes
    max_attributes = ATTRIBUTES_MAX_BYTES
    cells = _CellCache()
    while True:
        row_no += 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            stats.rows += 1
            stats.invalid += 1
            yield (row_no, None, "", "{}", f"unreadable row: {exc}")
            continue
        size = len(record)
        if size == 0 or (size == 1 and not record[0].strip()):
            continue
        stats.rows += 1
        error = None
        email = None
        name = ""
        attributes = "{}"
        # Trailing empty cells (a delimiter at the end of the line) are harmless.
        if size > width and any(cell.strip() for cell in record[width:]):
            error = f"{size} columns, but the header has {width}"
        else:
            try:
                email = fast_normalize_email(record[email_at] if email_at < size else "")
            except DomainError as exc:
                error = exc.errors[0].message
        if error is None and name_at is not None and name_at < size:
            name = record[name_at].strip()
            if len(name) > NAME_MAX:
                error = f"name: must be at most {NAME_MAX} characters"
        if error is None and flat:
            if nested:
                pairs = [
                    (path, cells[cell])
                    for index, path in paths
                    if index < size and (cell := record[index].strip())
                ]
                if pairs:
                    attributes = _object_json(pairs)
            else:
                parts = [
                    column[cell] for index, column in flat if index < size and (cell := record[index].strip())
                ]
                if parts:
                    attributes = "{" + ",".join(parts) + "}"
            if len(attributes) > max_attributes // 4 and len(attributes.encode()) > max_attributes:
                error = f"attributes: must be at most {max_attributes} bytes in total"
        # PostgreSQL text cannot hold NUL; JSON escapes it as \u0000, which jsonb rejects as well.
        if error is None and ("\x00" in name or "\\u0000" in attributes):
            error = "contains a NUL character"
        if error is not None:
            stats.invalid += 1
            yield (row_no, None, "", "{}", error)
        else:
            yield (row_no, email, name, attributes, None)
