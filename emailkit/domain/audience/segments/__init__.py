"""Segments: a typed subscriber filter, its validation, its compiler to SQL, and saved (dynamic) segments.

A filter is a tree: each node ANDs the conditions set on it, with ``and`` / ``or`` / ``not`` for groups. Its
canonical form is a JSON object with camelCase keys and internal ids (stored in ``segments.filter``), parsed
into frozen dataclasses and compiled into one SQLAlchemy boolean expression over ``subscribers``. Values are
always bound parameters; nothing is pasted into SQL text.

- `filter`: the typed tree, its limits, and its canonical JSON form.
- `validate`: the JSON form read into the tree, every problem reported with its path; the lists and campaigns
  it names must exist.
- `compile`: the tree as one boolean expression over ``subscribers``, for PostgreSQL or SQLite.
- `store`: saved segments (create, update, delete, list), previews and matches, and the segments a campaign
  targets, with the definitions recorded when it starts.
"""
