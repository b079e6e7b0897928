"""Stage records (frozen dataclasses) to and from the JSON their markers hold, the layout checked on the way in.

A marker written by an earlier run is read back into the record its stage returns, so a resumed run
sees exactly what a fresh one would. A marker whose layout no longer matches the record (a field
missing, renamed or of another type) raises `MarkerLayoutError`, which names the offending entry, so
the stage runner can run that stage again instead of failing later on a missing key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


class MarkerLayoutError(ValueError):
    """A stage marker's results do not fit the record its stage returns now."""


def to_json(record: Any) -> dict[str, Any]:
    """The record as JSON-ready data: fields in declaration order, nested records as objects."""
    if not dataclasses.is_dataclass(record) or isinstance(record, type):
        raise TypeError(f"a stage must return a dataclass instance, got {type(record).__name__}: {record!r:.200}")
    return dataclasses.asdict(record)


def from_json(kind: type[T], data: Any) -> T:
    """`data` (as `to_json` wrote it) read back into `kind`; raises `MarkerLayoutError` when it does not fit."""
    return _convert(kind, data, "results")


def _convert(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _record(hint, value, where)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        (kind, *others) = [arg for arg in args if arg is not type(None)]
        if others:
            raise TypeError(f"{where}: unions of several types are not supported in stage records ({hint})")
        return _convert(kind, value, where)
    if origin is list:
        _expect(isinstance(value, list), where, "a list", value)
        return [_convert(args[0], item, f"{where}[{index}]") for index, item in enumerate(value)]
    if origin is dict:
        _expect(isinstance(value, dict), where, "an object", value)
        return {key: _convert(args[1], item, f"{where}[{key!r}]") for key, item in value.items()}
    if hint is Any:
        return value
    if hint is float:
        _expect(isinstance(value, int | float) and not isinstance(value, bool), where, "a number", value)
        return float(value)
    if hint in (int, str, bool):
        _expect(isinstance(value, hint) and (hint is bool or not isinstance(value, bool)), where, hint.__name__, value)
        return value
    raise TypeError(f"{where}: type {hint!r} is not supported in stage records")


def _record(kind: type, value: Any, where: str) -> Any:
    _expect(isinstance(value, dict), where, f"an object ({kind.__name__})", value)
    fields = {f.name: f for f in dataclasses.fields(kind)}
    unexpected = sorted(set(value) - set(fields))
    if unexpected:
        raise MarkerLayoutError(f"{where} holds {unexpected}, which {kind.__name__} has no field for")
    required = [
        name
        for name, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [name for name in required if name not in value]
    if missing:
        raise MarkerLayoutError(f"{where} lacks {missing} ({kind.__name__})")
    hints = typing.get_type_hints(kind)
    return kind(**{name: _convert(hints[name], value[name], f"{where}.{name}") for name in fields if name in value})


def _expect(ok: bool, where: str, wanted: str, value: Any) -> None:
    if not ok:
        raise MarkerLayoutError(f"{where} should be {wanted}, got {type(value).__name__} {value!r:.80}")
