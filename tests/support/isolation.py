"""The machinery of the workspace isolation test: the schema walked by introspection, one call per ID argument,
the values and selections such a call needs, and the database snapshots that show whether it changed anything.

tests/api/test_workspace_isolation.py holds the tables (which object type each ID argument names, which values
make a call otherwise valid) and the assertions; this module knows nothing about emailkit's particular fields.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from websockets.asyncio.client import connect

from emailkit.db.engine import Database
from emailkit.db.scope import all_workspaces
from emailkit.db.tables.base import Base

Json = dict[str, Any]
TypeRef = Mapping[str, Any]

# How deep a generated selection goes below the operation's root field (object levels): enough to show an
# object's own data and its neighbours' names, small enough for the server's depth, token and cost limits.
SELECTION_DEPTH = 3
ROOTS = {"query": "queryType", "mutation": "mutationType", "subscription": "subscriptionType"}


# --- the schema, as introspection describes it ------------------------------------------------------------


class Schema:
    """An introspection result (`{"__schema": ...}`) with lookups by type name."""

    def __init__(self, introspection: Json) -> None:
        schema = introspection["__schema"]
        self.types: dict[str, Json] = {t["name"]: t for t in schema["types"]}
        self.roots: dict[str, str | None] = {
            kind: (schema[key] or {}).get("name") for kind, key in ROOTS.items()
        }

    def root_fields(self, kind: str) -> list[Json]:
        name = self.roots[kind]
        return list(self.types[name]["fields"]) if name else []

    def possible_types(self, interface: str) -> list[str]:
        return sorted(t["name"] for t in self.types[interface]["possibleTypes"] or [])


def named(ref: TypeRef) -> str:
    """The named type under any NON_NULL / LIST wrappers."""
    while ref["kind"] in ("NON_NULL", "LIST"):
        ref = ref["ofType"]
    name: str = ref["name"]
    return name


def is_list(ref: TypeRef) -> bool:
    """Whether the type (under an outer NON_NULL) is a list."""
    if ref["kind"] == "NON_NULL":
        ref = ref["ofType"]
    return bool(ref["kind"] == "LIST")


def required(value: Json) -> bool:
    """An argument or input field the caller must give: non-null and without a default."""
    return value["type"]["kind"] == "NON_NULL" and value.get("defaultValue") is None


def type_string(ref: TypeRef) -> str:
    """The type in GraphQL syntax, for a variable definition."""
    if ref["kind"] == "NON_NULL":
        return type_string(ref["ofType"]) + "!"
    if ref["kind"] == "LIST":
        return "[" + type_string(ref["ofType"]) + "]"
    name: str = ref["name"]
    return name


# --- where the ID arguments are ---------------------------------------------------------------------------


@dataclass(frozen=True)
class IdSlot:
    """One place an operation takes an ID: `path` runs from the root field's argument through input fields."""

    path: tuple[str, ...]
    # Who declares it: "Query.list" (a root field's own argument) or an input type's name.
    owner: str
    many: bool
    required: bool

    @property
    def name(self) -> str:
        return self.path[-1]

    @property
    def key(self) -> str:
        """How the ID tables name it: "Query.list.id", "UpdateListInput.optinTemplateId"."""
        return f"{self.owner}.{self.name}"


def id_slots(schema: Schema, kind: str, root_field: Json) -> list[IdSlot]:
    """Every ID a root field takes: its own ID arguments and the ID fields of its input objects, at any depth
    (an input type already being walked is not entered again, so recursive filters end)."""
    owner = f"{schema.roots[kind]}.{root_field['name']}"
    slots: list[IdSlot] = []
    for arg in root_field["args"]:
        slots += _slots_in(schema, arg, (arg["name"],), owner, required(arg), ())
    return slots


def _slots_in(
    schema: Schema, value: Json, path: tuple[str, ...], owner: str, needed: bool, walking: tuple[str, ...]
) -> list[IdSlot]:
    type_name = named(value["type"])
    if type_name == "ID":
        return [IdSlot(path, owner, is_list(value["type"]), needed)]
    described = schema.types[type_name]
    if described["kind"] != "INPUT_OBJECT" or type_name in walking:
        return []
    found: list[IdSlot] = []
    for f in described["inputFields"]:
        inner = needed and required(f)
        found += _slots_in(schema, f, (*path, f["name"]), type_name, inner, (*walking, type_name))
    return found


def nested_id_arguments(schema: Schema) -> list[str]:
    """ID arguments of fields below the roots ("Campaign.deliveries(subscriberId)"), which the isolation test
    does not call: it reports them so that such a field is added to it rather than left out unnoticed."""
    root_names = set(schema.roots.values())
    found = []
    for name, t in schema.types.items():
        if t["kind"] != "OBJECT" or name in root_names or name.startswith("__"):
            continue
        for f in t["fields"]:
            for arg in f["args"]:
                if _slots_in(schema, arg, (arg["name"],), name, False, ()):
                    found.append(f"{name}.{f['name']}({arg['name']})")
    return found


# --- building a call --------------------------------------------------------------------------------------


class UnplacedId(Exception):
    """A required ID argument whose object type the caller's tables do not know; the message is its key."""


@dataclass(frozen=True)
class Own:
    """Stands for the ID of the caller's own object of this type, in a table of extra values."""

    type_name: str


@dataclass
class CallBuilder:
    """Variables for a root field: required arguments filled with minimal valid values, ID arguments with IDs of
    the caller's own objects, then the extra values of the operation, then the ID under test at its slot."""

    schema: Schema
    # (slot key) -> the object type its IDs name
    id_type: Callable[[str], str | None]
    # the caller's own object of a type (workspace A's)
    own_id: Callable[[str], str]
    # values for non-ID scalars by input field or argument name ("email", "sendAt"), else by scalar type
    by_name: Mapping[str, Any]
    by_scalar: Mapping[str, Any]

    def arguments(
        self,
        root_field: Json,
        owner: str,
        extras: Mapping[tuple[str, ...], Any],
        slot: IdSlot,
        ids: list[str],
    ) -> Json:
        values: Json = {}
        for arg in root_field["args"]:
            if required(arg) and (arg["name"],) != slot.path:
                values[arg["name"]] = self.sample(arg, owner, (arg["name"],), slot.path)
        for path, extra in extras.items():
            if path != slot.path:
                self._set(values, root_field, owner, path, self._resolve(extra), slot.path)
        self._set(values, root_field, owner, slot.path, ids if slot.many else ids[0], slot.path)
        return values

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, Own):
            return self.own_id(value.type_name)
        if isinstance(value, list):
            return [self._resolve(v) for v in value]
        if isinstance(value, dict):
            return {k: self._resolve(v) for k, v in value.items()}
        return value

    def _set(
        self,
        values: Json,
        root_field: Json,
        owner: str,
        path: tuple[str, ...],
        value: Any,
        skip: tuple[str, ...],
    ) -> None:
        """Put `value` at `path`, making (and filling the required fields of) the input objects on the way; in
        a list of input objects already given (an extra value), `path` goes into its first element."""
        (arg,) = [a for a in root_field["args"] if a["name"] == path[0]]
        declared, container, key = arg, values, path[0]
        for depth, step in enumerate(path[1:], start=1):
            type_name = named(declared["type"])
            current = container.get(key)
            if isinstance(current, list) and current and isinstance(current[0], dict):
                container = current[0]
            else:
                if not isinstance(current, dict):
                    container[key] = self._input_object(type_name, path[:depth], skip)
                container = container[key]
            (declared,) = [f for f in self.schema.types[type_name]["inputFields"] if f["name"] == step]
            key = step
        container[key] = value

    def sample(self, value: Json, owner: str, path: tuple[str, ...], skip: tuple[str, ...]) -> Any:
        """A minimal valid value for an argument or input field (at `path`; the one at `skip` is left out, as
        the ID under test goes there)."""
        ref = value["type"]
        type_name = named(ref)
        if type_name == "ID":
            target = self.id_type(f"{owner}.{value['name']}")
            if target is None:
                raise UnplacedId(f"{owner}.{value['name']}")
            one: Any = self.own_id(target)
        elif value["name"] in self.by_name:
            return self.by_name[value["name"]]
        else:
            described = self.schema.types[type_name]
            if described["kind"] == "ENUM":
                one = described["enumValues"][0]["name"]
            elif described["kind"] == "INPUT_OBJECT":
                one = self._input_object(type_name, path, skip)
            else:
                one = self.by_scalar[type_name]
        return [one] if is_list(ref) else one

    def _input_object(self, type_name: str, path: tuple[str, ...], skip: tuple[str, ...]) -> Json:
        return {
            f["name"]: self.sample(f, type_name, (*path, f["name"]), skip)
            for f in self.schema.types[type_name]["inputFields"]
            if required(f) and (*path, f["name"]) != skip
        }


def selection(
    schema: Schema, type_name: str, depth: int = SELECTION_DEPTH, concrete: str | None = None
) -> str:
    """Every field of the type that needs no argument, objects down to `depth` levels; "" for a leaf type. An
    interface gets its own fields and, when the object's type is known (`concrete`), an inline fragment on it."""
    described = schema.types[type_name]
    if described["kind"] in ("SCALAR", "ENUM"):
        return ""
    parts = ["__typename"] if described["kind"] == "INTERFACE" else []
    for f in described["fields"]:
        if any(required(a) for a in f["args"]):
            continue
        inner_type = named(f["type"])
        if schema.types[inner_type]["kind"] in ("SCALAR", "ENUM"):
            parts.append(f["name"])
        elif depth > 1 and (inner := selection(schema, inner_type, depth - 1)):
            parts.append(f"{f['name']} {{ {inner} }}")
    if described["kind"] == "INTERFACE" and concrete in schema.possible_types(type_name):
        parts.append(f"... on {concrete} {{ {selection(schema, concrete, depth)} }}")
    return " ".join(parts)


def operation(
    schema: Schema, kind: str, root_field: Json, variables: Json, concrete: str | None = None
) -> str:
    """The document calling `root_field` with `variables` (one variable per given argument); `concrete` is the
    type of the object expected where the field returns an interface."""
    declared = {a["name"]: a for a in root_field["args"]}
    definitions = ", ".join(f"${n}: {type_string(declared[n]['type'])}" for n in variables)
    arguments = ", ".join(f"{n}: ${n}" for n in variables)
    head = f"{kind} Isolation({definitions})" if definitions else kind
    call = f"{root_field['name']}({arguments})" if arguments else root_field["name"]
    inner = selection(schema, named(root_field["type"]), concrete=concrete)
    return f"{head} {{ {call}{f' {{ {inner} }}' if inner else ''} }}"


# --- reading the answers ----------------------------------------------------------------------------------


def error_codes(body: Json, root: str) -> list[str]:
    """The codes of the top-level errors and of the payload's userErrors."""
    codes = [str((e.get("extensions") or {}).get("code")) for e in body.get("errors") or []]
    payload = (body.get("data") or {}).get(root)
    if isinstance(payload, dict):
        codes += [str(e.get("code")) for e in payload.get("userErrors") or []]
    return codes


ENUM_VALUE = re.compile(r"[A-Z][A-Z0-9_]*")


def is_empty(value: Any) -> bool:
    """Nothing in it: null, false, 0, "", empty lists, enum values (EXACT, NONE: they describe, they hold no
    data), and objects of empty values (a connection without edges, a preview counting nobody)."""
    if isinstance(value, dict):
        return all(is_empty(v) for v in value.values())
    if isinstance(value, str):
        return value == "" or ENUM_VALUE.fullmatch(value) is not None
    return value in (None, False, 0, [])


def normalised(body: Json, replacements: Mapping[str, str]) -> str:
    """The answer as text with the given strings replaced (the ID under test and the control's missing one
    become the same placeholder, so that the two answers can be compared)."""
    text = json.dumps(body, sort_keys=True)
    for old, new in replacements.items():
        text = text.replace(old, new)
    return text


def findings(text: str, markers: Iterable[str]) -> list[str]:
    """The markers that occur in `text` (case-insensitive)."""
    lowered = text.lower()
    return [m for m in markers if m.lower() in lowered]


def mentions_of(text: str, words: Iterable[str]) -> list[str]:
    """Which of `words` occur in `text` as whole tokens (IDs inside longer IDs do not count)."""
    return [w for w in words if re.search(rf"(?<![A-Za-z0-9_=-]){re.escape(w)}(?![A-Za-z0-9_=-])", text)]


# --- database snapshots -----------------------------------------------------------------------------------


@dataclass
class Snapshot:
    """Every row of every table, by table: the compared columns' names and the rows as sorted tuples."""

    columns: dict[str, list[str]] = field(default_factory=dict)
    rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)

    def changed(self, after: Snapshot) -> dict[str, tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
        """Per changed table: the rows that went away and the rows that appeared."""
        out = {}
        for table in sorted(set(self.rows) | set(after.rows)):
            before_rows, after_rows = set(self.rows.get(table, [])), set(after.rows.get(table, []))
            gone, new = sorted(before_rows - after_rows, key=repr), sorted(after_rows - before_rows, key=repr)
            if gone or new:
                out[table] = (gone, new)
        return out

    def differences(self, after: Snapshot) -> list[str]:
        return [f"{table}: -{gone} +{new}" for table, (gone, new) in self.changed(after).items()]

    def workspaces_changed(self, after: Snapshot) -> set[Any]:
        """The workspace_id of every row that went away or appeared ("-" for tables without one)."""
        found: set[Any] = set()
        for table, (gone, new) in self.changed(after).items():
            names = self.columns.get(table) or after.columns[table]
            where = names.index("workspace_id") if "workspace_id" in names else None
            found |= {"-" if where is None else row[where] for row in (*gone, *new)}
        return found

    def count(self, table: str, workspace_id: int) -> int:
        where = self.columns[table].index("workspace_id")
        return sum(1 for row in self.rows[table] if row[where] == workspace_id)


async def snapshot(db: Database, ignored: Mapping[str, set[str]]) -> Snapshot:
    """All rows of every table of every workspace (read inside all_workspaces(), so row-level security shows
    them all), without the `ignored` columns (table -> names) that change by themselves."""
    taken = Snapshot()
    with all_workspaces():
        async with db.session() as session:
            for table in Base.metadata.sorted_tables:
                columns = [c for c in table.columns if c.name not in ignored.get(table.name, set())]
                result = await session.execute(select(*columns))
                taken.columns[table.name] = [c.name for c in columns]
                taken.rows[table.name] = sorted((tuple(_plain(v) for v in row) for row in result), key=repr)
    return taken


def _plain(value: Any) -> Any:
    """A hashable form of a column value (JSON columns hold dicts and lists)."""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    return value


# --- subscriptions ----------------------------------------------------------------------------------------

# Seconds without a message after which a subscription counts as having said all it will say.
SILENCE = 2.0


async def subscribe(url: str, key: str, query: str, variables: Json) -> Json:
    """What a graphql-transport-ws subscription sends until it completes, errors or falls silent:
    {"messages": [...], "errors": [every error, of `error` and `next` messages], "data": [every `next`'s data]}."""
    messages: list[Json] = []
    async with connect(url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {key}"}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        subscription = {"query": query, "variables": variables}
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": subscription}))
        try:
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), SILENCE))
                messages.append({k: v for k, v in message.items() if k != "id"})
                if message["type"] in ("complete", "error"):
                    break
        except TimeoutError:
            await ws.send(json.dumps({"id": "1", "type": "complete"}))
    errors = [
        e
        for m in messages
        for e in (m.get("payload") if m["type"] == "error" else (m.get("payload") or {}).get("errors")) or []
    ]
    data = [m["payload"].get("data") for m in messages if m["type"] == "next"]
    return {"messages": messages, "errors": errors, "data": data}
