"""The data sources `data prepare` knows: each source module declares itself, prepare and the CLI iterate.

A source module in `datamodules.sources` becomes a `data prepare <name>` sub-command by defining a
module-level `SOURCE = DataSource(...)`: its name, help line, its own command-line options, and
the function that scans the dataset into records. Nothing else is edited: `datamodules.prepare`
and the command line find it here. A source living elsewhere (a plug-in, a test) is added with
`register(...)`.

Built-in sources are discovered when first asked for (`all_sources()`), not at import time, so that
importing the registry stays cheap and a broken source module names itself in the error.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from datamodules.records import SourceScan


@dataclass(frozen=True)
class SourceOption:
    """One command-line option of a source, passed to its `scan` as the keyword `keyword`.

    Args:
        flag: the option as typed, `--views-csv`; the keyword is `views_csv`.
        help: the `--help` line.
        required: the command refuses to run without it.
        default: the value when it is not given (None: the scan function's own default applies).
    """

    flag: str
    help: str
    required: bool = False
    default: str | None = None

    def __post_init__(self) -> None:
        if not self.flag.startswith("--") or len(self.flag) < 3:
            raise ValueError(f"source option {self.flag!r}: write it as a long option, such as '--root'")

    @property
    def keyword(self) -> str:
        """The keyword argument of `DataSource.scan` (and the argparse destination)."""
        return self.flag[2:].replace("-", "_")


def _never(_: Mapping[str, Any]) -> bool:
    return False


@dataclass(frozen=True)
class DataSource:
    """A dataset layout `data prepare` turns into shards.

    Args:
        name: the sub-command word (`lit-medxchat data prepare <name>`) and the registry key.
        help: one line for `--help`.
        options: the source's own command-line options (the shard options are common to all).
        scan: `scan(progress=bool, **{option.keyword: value})` -> `SourceScan`: the records to write,
            and every item skipped or converted on the way. It raises FileNotFoundError or ValueError
            naming the option to fix when the input is unusable.
        view_source_name: what `view_source` says for views the source itself provides, when a view
            classifier also runs ("metadata", "csv").
        compares_views: given the scan's keyword arguments, whether views the source provides are
            checked against the classifier (IU X-ray with a views CSV) or left alone.
    """

    name: str
    help: str
    options: tuple[SourceOption, ...]
    scan: Callable[..., SourceScan]
    view_source_name: str = "source"
    compares_views: Callable[[Mapping[str, Any]], bool] = _never

    def __post_init__(self) -> None:
        if not self.name or self.name.startswith("-") or " " in self.name:
            raise ValueError(f"data source name {self.name!r}: give one command word, such as 'mimic-cxr'")
        keywords = [option.keyword for option in self.options]
        if len(set(keywords)) != len(keywords) or "progress" in keywords:
            raise ValueError(f"data source {self.name}: options {keywords} repeat a name or use 'progress'")

    def arguments(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The scan's keyword arguments from `given`: defaults filled in, required ones checked.

        Raises ValueError naming the source, the option and the fix for a missing or unknown one.
        """
        known = {option.keyword: option for option in self.options}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ValueError(
                f"data source {self.name}: unknown argument(s) {unknown}; it takes {sorted(known) or 'none'}"
            )
        arguments = {}
        for keyword, option in known.items():
            value = given.get(keyword, option.default)
            if value is None and option.required:
                raise ValueError(f"data source {self.name}: {option.flag} is required ({option.help})")
            arguments[keyword] = value
        return arguments


_SOURCES: dict[str, DataSource] = {}
_BUILTINS_LOADED = False


def register(source: DataSource, replace: bool = False) -> DataSource:
    """Add `source` to the registry (returned, so it can decorate a module-level assignment).

    Raises ValueError when the name is taken, unless `replace`.
    """
    _load_builtins()
    if source.name in _SOURCES and not replace and _SOURCES[source.name] is not source:
        raise ValueError(f"data source {source.name!r} is already registered; pick another name or pass replace=True")
    _SOURCES[source.name] = source
    return source


def unregister(name: str) -> None:
    """Remove a source added with `register` (a no-op for an unknown name)."""
    _SOURCES.pop(name, None)


def all_sources() -> dict[str, DataSource]:
    """Every source by name: the built-in ones (by module name), then those added with `register`."""
    _load_builtins()
    return dict(_SOURCES)


def get_source(name: str) -> DataSource:
    """The source called `name`; raises ValueError listing the known names."""
    known = all_sources()
    if name not in known:
        raise ValueError(f"unknown data source {name!r}; known sources: {', '.join(known)}")
    return known[name]


def _load_builtins() -> None:
    """Import every module of `datamodules.sources` and register the `SOURCE` each one declares."""
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    package = importlib.import_module("datamodules.sources")
    try:
        for module_info in sorted(pkgutil.iter_modules(package.__path__), key=lambda info: info.name):
            if module_info.name == "registry":
                continue
            module = importlib.import_module(f"{package.__name__}.{module_info.name}")
            source = getattr(module, "SOURCE", None)
            if source is None:
                continue  # a helper module (common, images, report_sections)
            if not isinstance(source, DataSource):
                raise TypeError(f"{module.__name__}.SOURCE is a {type(source).__name__}; declare a DataSource")
            if source.name in _SOURCES:
                raise ValueError(f"data source {source.name!r} is declared twice; {module.__name__} must pick another")
            _SOURCES[source.name] = source
    except BaseException:
        _SOURCES.clear()
        _BUILTINS_LOADED = False  # the next call names the same error instead of offering a partial list
        raise


__all__ = ["DataSource", "SourceOption", "all_sources", "get_source", "register", "unregister"]
