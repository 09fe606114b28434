"""summary.json in and out: decode JSON data into `Summary` with errors that name the field,
encode a `Summary` back, and the published JSON Schema (summary.schema.json).

`decode` is the one checked reader: msgspec converts the data (fast); only when that fails, or
to find a field `REQUIRED` names that is absent, is the data walked against the model to name
the field in words a user reads (`requests.total` must be a whole number >= 0, got "many").
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi

from loadgen.summary.model import SCHEMA_VERSION, SUPPORTED_VERSIONS, Summary, required_fields


class SummaryError(ValueError):
    """Summary data of the wrong shape; the message names the dotted field (no file name)."""


def show_value(value: Any) -> str:
    """A JSON value for an error message, cut at 40 characters."""
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _want(t: mi.Type) -> str:
    """What a value of type `t` is, in words."""
    if isinstance(t, mi.UnionType):
        kinds = [k for k in t.types if not isinstance(k, mi.NoneType)]
        text = " or ".join(_want(k) for k in kinds) if kinds else "null"
        return text + (" or null" if any(isinstance(k, mi.NoneType) for k in t.types) else "")
    if isinstance(t, mi.IntType):
        return "a whole number" + (f" >= {t.ge}" if t.ge is not None else "")
    if isinstance(t, mi.FloatType):
        bounds = f" in [{t.ge:g}, {t.le:g}]" if t.ge is not None and t.le is not None else ""
        return "a finite number" + bounds
    if isinstance(t, mi.StrType):
        return "a string"
    if isinstance(t, mi.BoolType):
        return "true or false"
    if isinstance(t, mi.TupleType):
        return "[low, high]" if len(t.item_types) == 2 else f"a list of {len(t.item_types)} items"
    if isinstance(t, mi.ListType):
        return "a list of strings" if isinstance(t.item_type, mi.StrType) else "a list"
    if isinstance(t, mi.StructType | mi.DictType):
        return "an object"
    return "a JSON value"


def _ok_scalar(t: mi.Type, v: Any) -> bool:
    if isinstance(t, mi.IntType):
        return (
            isinstance(v, int) and not isinstance(v, bool) and (t.ge is None or v >= t.ge)
        )  # msgspec accepts no bool for an int
    if isinstance(t, mi.FloatType):
        ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        return ok and (t.ge is None or v >= t.ge) and (t.le is None or v <= t.le)
    if isinstance(t, mi.StrType):
        return isinstance(v, str)
    if isinstance(t, mi.BoolType):
        return isinstance(v, bool)
    if isinstance(t, mi.NoneType):
        return v is None
    return isinstance(t, mi.AnyType)


def _fits(t: mi.Type, v: Any) -> bool:
    """Does `v` have the JSON kind of `t` (not looking inside objects and lists)?"""
    if isinstance(t, mi.UnionType):
        return any(_fits(k, v) for k in t.types)
    if isinstance(t, mi.StructType | mi.DictType):
        return isinstance(v, dict)
    if isinstance(t, mi.ListType):
        return isinstance(v, list)
    if isinstance(t, mi.TupleType):
        return isinstance(v, list) and len(v) == len(t.item_types)
    return _ok_scalar(t, v)


def _dot(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _first_problem(t: mi.Type, v: Any, where: str, file: bool = True) -> str | None:
    """The first field of `v` that does not fit type `t` (or lacks a required field), in words."""
    if not _fits(t, v):
        return f"`{where}` must be {_want(t)}, got {show_value(v)}"
    if isinstance(t, mi.UnionType):
        t = next(k for k in t.types if _fits(k, v))
    if isinstance(t, mi.StructType):
        return _struct_problem(t, v, where, file)
    if isinstance(t, mi.DictType):
        problems = (_first_problem(t.value_type, item, f"{where}.{key}", file) for key, item in v.items())
        return next((p for p in problems if p), None)
    if isinstance(t, mi.ListType | mi.TupleType):
        return _items_problem(t, v, where, file)
    return None


def _struct_problem(t: mi.StructType, v: dict[str, Any], where: str, file: bool) -> str | None:
    """`file`: also the fields a summary.json must hold (`REQUIRED`), not only the model's own.
    Fields are checked in the model's order, so the first wrong one is named."""
    required = {f.encode_name for f in t.fields if f.required}
    if file:
        required.update(required_fields(t.cls, v))
    for f in t.fields:
        if f.encode_name not in v:
            if f.encode_name in required:
                return f"`{_dot(where, f.name)}` is missing"
            continue
        problem = _first_problem(f.type, v[f.encode_name], _dot(where, f.name), file)
        if problem:
            return problem
    names = {f.encode_name for f in t.fields}
    try:
        msgspec.convert({k: item for k, item in v.items() if k in names}, t.cls)
    except msgspec.ValidationError as exc:  # __post_init__: a rule across fields
        text = str(exc).split(" - at `")[0]
        return f"`{where}` {text}" if where else text
    return None


def _items_problem(t: mi.ListType | mi.TupleType, v: list[Any], where: str, file: bool) -> str | None:
    types = [t.item_type] * len(v) if isinstance(t, mi.ListType) else list(t.item_types)
    for i, (it, item) in enumerate(zip(types, v, strict=True)):
        if not _fits(it, item):
            if isinstance(t, mi.ListType) and not isinstance(it, mi.StructType | mi.DictType | mi.ListType):
                return (
                    f"`{where}` must be {_want(t)}, got {show_value(v)}"  # `notes` must be a list of strings
                )
            return f"`{where}[{i}]` must be {_want(it)}, got {show_value(item)}"
        problem = _first_problem(it, item, f"{where}[{i}]", file)
        if problem:
            return problem
    return None


def _summary_type() -> mi.StructType:
    t = mi.type_info(Summary)
    assert isinstance(t, mi.StructType)
    return t


_TYPE = _summary_type()


def _missing(t: mi.Type, v: Any, where: str) -> str | None:
    """The first field `REQUIRED` names that `v` lacks (the data already converted cleanly)."""
    if isinstance(t, mi.UnionType):
        t = next((k for k in t.types if isinstance(k, mi.StructType | mi.DictType)), t)
    if isinstance(t, mi.StructType) and isinstance(v, dict):
        for name in required_fields(t.cls, v):
            if name not in v:
                return f"`{_dot(where, name)}` is missing"
        for f in t.fields:
            if f.encode_name in v and _has_required(f.type):
                problem = _missing(f.type, v[f.encode_name], _dot(where, f.name))
                if problem:
                    return problem
    elif isinstance(t, mi.DictType) and isinstance(v, dict) and _has_required(t.value_type):
        for key, item in v.items():
            problem = _missing(t.value_type, item, f"{where}.{key}")
            if problem:
                return problem
    return None


def _has_required(t: mi.Type) -> bool:
    """Can data of type `t` lack a field `required_fields` asks for? (Lists are not walked:
    their items, windows and polls, are complete by construction.)"""
    if isinstance(t, mi.UnionType):
        return any(_has_required(k) for k in t.types)
    if isinstance(t, mi.DictType):
        return _has_required(t.value_type)
    return isinstance(t, mi.StructType)


def decode(data: Any) -> Summary:
    """JSON data (a dict from summary.json) as a `Summary`; SummaryError names the first field
    of the wrong shape, a missing required one, or a schema version this code cannot read."""
    if not isinstance(data, Mapping):
        raise SummaryError(f"a summary must be a JSON object, got {show_value(data)}")
    version = data.get("schema_version", 1)
    if version not in SUPPORTED_VERSIONS or isinstance(version, bool):
        raise SummaryError(
            f"schema_version {show_value(version)} is not one this loadgen reads (it reads "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))}): a summary written by another loadgen version"
        )
    raw = dict(data)
    try:
        summary = msgspec.convert(raw, Summary)
    except msgspec.ValidationError as exc:
        raise SummaryError(_first_problem(_TYPE, raw, "") or str(exc)) from exc
    problem = _missing(_TYPE, raw, "")
    if problem:
        raise SummaryError(problem)
    return summary


_DROP = object()  # `_lenient`: this value does not fit its type


def _lenient(t: mi.Type, v: Any) -> Any:
    """`v` with every part that does not fit type `t` left out (a field with a default falls
    back to it, a dict entry or list item is dropped); `_DROP` when `v` itself cannot be kept."""
    if isinstance(t, mi.UnionType):
        for k in t.types:
            if _fits(k, v):
                kept = _lenient(k, v)
                if kept is not _DROP:
                    return kept
        return _DROP
    if not _fits(t, v):
        return _DROP
    if isinstance(t, mi.StructType):
        out = {}
        for f in t.fields:
            if f.encode_name in v:
                kept = _lenient(f.type, v[f.encode_name])
                if kept is _DROP and f.required:
                    return _DROP
                if kept is not _DROP:
                    out[f.encode_name] = kept
        try:
            msgspec.convert(out, t.cls)
        except msgspec.ValidationError:
            return _DROP
        return out
    if isinstance(t, mi.DictType):
        entries = {key: _lenient(t.value_type, item) for key, item in v.items()}
        return {key: item for key, item in entries.items() if item is not _DROP}
    if isinstance(t, mi.ListType):
        return [item for item in (_lenient(t.item_type, x) for x in v) if item is not _DROP]
    if isinstance(t, mi.TupleType):
        pair = [_lenient(it, item) for it, item in zip(t.item_types, v, strict=True)]
        return _DROP if any(item is _DROP for item in pair) else pair
    return v


def as_summary(summary: Summary | Mapping[str, Any]) -> Summary:
    """A `Summary` as is; summary data held in memory (a dict) decoded leniently: without the
    file's required-field checks, and with whatever does not fit the model left out (its
    default), as reports of a partial or odd summary show what they can instead of failing.
    Files go through `decode`, which refuses them."""
    if isinstance(summary, Summary):
        return summary
    data = dict(summary)
    try:
        return msgspec.convert(data, Summary)
    except msgspec.ValidationError:
        kept = _lenient(_TYPE, data)
        return msgspec.convert(kept if kept is not _DROP else {}, Summary)


def load_summary(path: Path) -> Summary:
    """summary.json as a `Summary` (SummaryError or OSError/ValueError for a broken file;
    `runfolder.read_summary` wraps them in RunFolderError naming the file)."""
    return decode(json.loads(path.read_bytes()))


def to_dict(summary: Summary) -> dict[str, Any]:
    """The summary as plain JSON data, as summary.json holds it."""
    return summary.to_dict()


def encode(summary: Summary) -> bytes:
    """summary.json's bytes (indented JSON)."""
    return (json.dumps(summary.to_dict(), indent=2) + "\n").encode()


def schema() -> dict[str, Any]:
    """summary.json's JSON Schema, generated from the model; the `REQUIRED` fields are required."""
    from loadgen.summary.model import REQUIRED

    doc: dict[str, Any] = msgspec.json.schema(Summary)
    defs = doc.get("$defs", {})
    for cls, names in REQUIRED.items():
        d = defs.get(cls.__name__)
        if d is not None:
            d["required"] = sorted(set(d.get("required", [])) | set(names))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"loadgen summary.json (schema_version {SCHEMA_VERSION})",
        **doc,
    }


def schema_json() -> str:
    """summary.schema.json's text (the repository's copy must equal it: a unit test checks; to
    refresh it, `python -c 'import loadgen.summary as s; print(s.schema_json(), end="")' >
    summary.schema.json`)."""
    return json.dumps(schema(), indent=2, sort_keys=True) + "\n"


__all__ = [
    "SummaryError",
    "as_summary",
    "decode",
    "encode",
    "load_summary",
    "schema",
    "schema_json",
    "to_dict",
]
