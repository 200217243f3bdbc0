"""One generic registry for every plugin kind, fed by decorators and by entry points.

Every plugin is declared in its package's ``[project.entry-points."occlusion_distill.<kind>"]`` table,
the built-ins in this package's own ``pyproject.toml``, and loaded lazily, the first time a registry is
asked for names. The built-ins load first (so a clash names both sides) and credit themselves as
"(built-in)"; a third-party plugin that fails to import becomes a warning and the rest keep working.
A plugin may also register with the ``register`` decorator when its module is imported. This module
imports no plugin module: the registry is a layer below every plugin.
"""

from __future__ import annotations

import difflib
import inspect
import keyword
import os
import warnings
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable, Iterator

from ._version import __version__
from .errors import OccdistillError, PluginError, UsageError

KINDS = ("occlusions", "tasks", "distillers", "miners", "backbones", "datasets")
ENTRY_POINT_PREFIX = "occlusion_distill."
BUILTIN_ORIGIN = "occlusion-distill"


class PluginLoadWarning(UserWarning):
    """A third-party plugin could not be imported; it is left out."""


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Callable[..., Any]
    description: str
    origin: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "description": self.description, "origin": self.origin}


def first_doc_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0].strip() if doc.strip() else ""


def _builtin_origin() -> str:
    return f"{BUILTIN_ORIGIN}=={__version__} (built-in)"


def _allowed_distributions() -> set[str] | None:
    """``OCCDISTILL_PLUGINS`` limits which third-party distributions load ("none" loads none)."""
    raw = os.environ.get("OCCDISTILL_PLUGINS")
    if raw is None:
        return None
    names = {n.strip().lower() for n in raw.split(",") if n.strip()}
    return set() if names <= {"none", ""} else names


class Registry:
    """Named factories of one kind: ``register`` (decorator), ``get``, ``create``, ``names``, ``entries``."""

    def __init__(self, kind: str, *, fallback: Callable[[str], Entry | None] | None = None,
                 extra_names: Callable[[], list[str]] | None = None):
        self.kind = kind
        self.group = ENTRY_POINT_PREFIX + kind
        self._entries: dict[str, Entry] = {}
        self._entry_points_loaded = False
        self._clash: PluginError | None = None
        self.load_warnings: list[str] = []
        # Backbones resolve any timm model name without registering thousands of entries.
        self._fallback = fallback
        self._extra_names = extra_names

    def set_fallback(self, fallback: Callable[[str], Entry | None] | None,
                     extra_names: Callable[[], list[str]] | None = None) -> None:
        """Resolve names that are not registered: ``fallback(name)`` gives an ``Entry`` or None, and
        ``extra_names()`` the names it knows, for "did you mean" hints (the timm backbones use this)."""
        self._fallback = fallback
        self._extra_names = extra_names

    # -- registration -----------------------------------------------------------------------
    def register(self, obj: Callable[..., Any] | str | None = None, *, name: str | None = None,
                 description: str | None = None, origin: str | None = None):
        """Use bare (``@reg.register``), with a name (``@reg.register("lower-half")``) or as a call."""
        if isinstance(obj, str):
            name, obj = obj, None

        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.add(name or getattr(fn, "name", None) or fn.__name__, fn,
                     description=description, origin=origin)
            return fn

        return decorator(obj) if obj is not None else decorator

    def add(self, name: str, obj: Callable[..., Any], *, description: str | None = None,
            origin: str | None = None) -> Entry:
        entry = Entry(name=name, obj=obj, description=description or first_doc_line(obj),
                      origin=origin or _builtin_origin())
        if name in self._entries:
            other = self._entries[name]
            raise PluginError(
                f"two {self.kind} plugins are named '{name}': one from {other.origin}, "
                f"one from {entry.origin}; uninstall or rename one of them")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    # -- third-party discovery ----------------------------------------------------------------
    def load_entry_points(self, *, force: bool = False) -> None:
        """Load third-party plugins once; a name clash is kept and raised on every later lookup."""
        if self._entry_points_loaded and not force:
            if self._clash is not None:
                raise self._clash
            return
        self._entry_points_loaded = True
        allowed = _allowed_distributions()

        def dist_name(ep: metadata.EntryPoint) -> str:
            dist = getattr(ep, "dist", None)
            return dist.metadata["Name"] if dist is not None else "unknown distribution"

        # built-ins first, so that a third-party clash names both sides
        points = sorted(metadata.entry_points(group=self.group), key=lambda ep: dist_name(ep).lower() != BUILTIN_ORIGIN)
        for ep in points:
            dist = getattr(ep, "dist", None)
            name = dist_name(ep)
            builtin = name.lower() == BUILTIN_ORIGIN
            origin = _builtin_origin() if builtin else (f"{name}=={dist.version}" if dist is not None else name)
            if not builtin and allowed is not None and name.lower() not in allowed:
                continue
            if ep.name in self._entries and self._entries[ep.name].origin == origin:
                continue  # reloaded after entry points were refreshed
            names_before = set(self._entries)
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plugin must not take the toolkit down
                if builtin:
                    raise PluginError(f"built-in {self.kind[:-1]} '{ep.name}' failed to load ({ep.value}): "
                                      f"{type(exc).__name__}: {exc}; reinstall occlusion-distill") from exc
                msg = (f"{self.kind} plugin '{ep.name}' from {origin} failed to load and is skipped: "
                       f"{type(exc).__name__}: {exc}")
                self.load_warnings.append(msg)
                warnings.warn(msg, PluginLoadWarning, stacklevel=2)
                continue
            existing = self._entries.get(ep.name)
            if existing is not None and existing.obj is obj and ep.name not in names_before:
                # the plugin also used our decorator on import: one plugin, credited to its package
                self._entries[ep.name] = Entry(ep.name, obj, existing.description, origin)
                continue
            try:
                self.add(ep.name, obj, origin=origin)
            except PluginError as clash:
                self._clash = self._clash or clash
        if self._clash is not None:
            raise self._clash

    # -- lookup -------------------------------------------------------------------------------
    def names(self) -> list[str]:
        self.load_entry_points()
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        self.load_entry_points()
        return [self._entries[n] for n in sorted(self._entries)]

    def __contains__(self, name: object) -> bool:
        self.load_entry_points()  # a clash raises here instead of passing for "unknown"
        return str(name) in self._entries or (self._fallback is not None and self._fallback(str(name)) is not None)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> Entry:
        self.load_entry_points()
        if name in self._entries:
            return self._entries[name]
        if self._fallback is not None:
            entry = self._fallback(name)
            if entry is not None:
                return entry
        raise PluginError(self.unknown_message(name))

    def unknown_message(self, name: str) -> str:
        candidates = self.names() + (self._extra_names() if self._extra_names else [])
        close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else \
            f"; available: {', '.join(self.names())}"
        return f"unknown {self.kind[:-1]} '{name}'{hint}"

    def check_options(self, name: str, **kwargs: Any) -> None:
        """``UsageError`` naming the plugin's options (and the closest to a misspelt one) when ``kwargs``
        do not fit its factory's signature; ``None`` values are dropped, as ``create`` drops them."""
        entry = self.get(name)
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        try:
            signature = inspect.signature(entry.obj)
        except ValueError:
            return  # no introspectable signature: let the call itself decide
        try:
            signature.bind_partial(**kwargs)
        except TypeError as exc:
            raise UsageError(f"{self.kind[:-1]} '{name}' does not accept these options: {exc}"
                             + _option_hint(signature, kwargs)) from exc

    def build(self, name: str, **kwargs: Any) -> tuple[Any, Entry]:
        """``create`` for user input: unknown options and plugin failures become one-line errors."""
        entry = self.get(name)
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        self.check_options(name, **kwargs)
        try:
            return entry.obj(**kwargs), entry
        except OccdistillError:
            raise
        except Exception as exc:
            raise PluginError(f"{self.kind[:-1]} '{name}' from {entry.origin} failed to build with "
                              f"{kwargs or 'its defaults'}: {type(exc).__name__}: {exc}") from exc

    def create(self, name: str, **kwargs: Any) -> Any:
        """Build the named plugin; ``None`` keyword values are dropped so defaults hold (as in timm)."""
        entry = self.get(name)
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        return entry.obj(**kwargs)


def _option_hint(signature: inspect.Signature, kwargs: dict[str, Any]) -> str:
    """The options a factory takes, and the closest to a misspelt one (``lambda_`` reads as ``lambda``)."""
    accepted = [p.name for p in signature.parameters.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    # as typed on the command line: ``lambda_`` is ``lambda`` there; ``task`` is the run's, not an option
    shown = [n[:-1] if n.endswith("_") and keyword.iskeyword(n[:-1]) else n for n in accepted
             if n not in ("self", "task")]
    unknown = [k for k in kwargs if k not in accepted]
    if unknown and unknown[0] + "_" in accepted:  # a keyword given as typed on the command line
        return f"; from Python, write it '{unknown[0]}_' (the command line's '{unknown[0]}')"
    close = difflib.get_close_matches(unknown[0].rstrip("_"), shown, n=1, cutoff=0.6) if unknown else []
    return (f"; did you mean '{close[0]}'?" if close else "") + \
        (f" (its options: {', '.join(shown)})" if shown else " (it takes no options)")


_REGISTRIES: dict[str, Registry] = {}


def registry(kind: str) -> Registry:
    """The registry of one plugin kind (``occlusions``, ``tasks``, ``distillers``, ``miners``, ``backbones``,
    ``datasets``); raises ``PluginError`` for another kind."""
    if kind not in KINDS:
        raise PluginError(f"unknown plugin kind '{kind}'; kinds are: {', '.join(KINDS)}")
    return _REGISTRIES[kind]


def _make(kind: str, **kw: Any) -> Registry:
    _REGISTRIES[kind] = Registry(kind, **kw)
    return _REGISTRIES[kind]


occlusions = _make("occlusions")
tasks = _make("tasks")
distillers = _make("distillers")
miners = _make("miners")  # negative mining strategies of the triplet distiller
datasets = _make("datasets")
backbones = _make("backbones")  # its timm fallback is attached in models.backbones

def create(kind: str, name: str, **kwargs: Any) -> Any:
    return registry(kind).create(name, **kwargs)


def list_plugins(kind: str | None = None) -> dict[str, list[dict[str, str]]]:
    kinds = [kind] if kind else list(KINDS)
    return {k: [e.as_dict() for e in registry(k).entries()] for k in kinds}
