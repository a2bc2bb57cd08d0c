"""One registry class for attacks, models, datasets and training objectives (defenses).

A :class:`Registry` maps names to entries (functions, classes, factories) with per-entry
metadata (an attack's ``kind``, a dataset's status function, a defense's description). Names
are folded (:func:`advlab._utils.canonical_name`: case, ``-``, ``_`` and spaces do not matter)
but each entry keeps the spelling it was registered with for listings. Registering a name
twice is an error unless the caller says ``replace=True``.

    MODELS = Registry("model")

    @MODELS.register("small-cnn", family="cnn")
    def small_cnn(num_classes, input_shape): ...

    MODELS.get("Small_CNN")          # the builder
    MODELS.metadata("small_cnn")     # {"family": "cnn"}
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from advlab._utils import canonical_name

T = TypeVar("T")
V = TypeVar("V")  # what a decorator returns: the decorated object, with its own type

__all__ = ["MetadataView", "Registry", "UnknownNameError"]


class UnknownNameError(ValueError, KeyError):
    """An unknown registry name: a ``ValueError`` (and a ``KeyError`` for dict-style lookups)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass
class _Entry(Generic[T]):
    name: str  # as registered (shown in listings)
    value: T
    meta: dict[str, Any] = field(default_factory=dict)


def _owner(value: Any) -> str:
    """``module.qualname`` of a registered object, for duplicate-registration errors."""
    module = getattr(value, "__module__", None) or type(value).__module__
    name = getattr(value, "__qualname__", None) or type(value).__qualname__
    return f"{module}.{name}"


class Registry(Generic[T]):
    """Named entries of one kind (``what``: "attack", "model", ...), looked up by folded name.

    Supports read-only dict-style use as well: ``registry[name]``, ``name in registry``,
    iteration over the registered names, ``keys()``, ``values()``, ``items()``, ``len()``.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, _Entry[T]] = {}

    # -- registration --------------------------------------------------------------------
    def add(self, name: str, value: T, *, replace: bool = False, **meta: Any) -> T:
        """Register ``value`` under ``name`` with metadata ``meta``; returns ``value``.

        A name already taken by another object is a ValueError naming both owners, unless
        ``replace=True``. Re-registering the same owner (a reloaded module) replaces silently.
        """
        key = canonical_name(name)
        old = self._entries.get(key)
        if old is not None and not replace and _owner(old.value) != _owner(value):
            raise ValueError(f"{self.what} {name!r} is already registered by {_owner(old.value)}; "
                             f"{_owner(value)} cannot take the name (pass replace=True to "
                             "override it)")
        self._entries[key] = _Entry(name, value, dict(meta))
        return value

    def register(self, name: str, *, replace: bool = False, **meta: Any) -> Callable[[V], V]:
        """Decorator form of :meth:`add` (returns the decorated object unchanged)."""

        def decorator(value: V) -> V:
            self.add(name, value, replace=replace, **meta)  # type: ignore[arg-type]
            return value

        return decorator

    # -- lookup --------------------------------------------------------------------------
    def _entry(self, name: str) -> _Entry[T]:
        entry = self._entries.get(canonical_name(name)) if isinstance(name, str) else None
        if entry is None:
            raise UnknownNameError(self.unknown_message(name))
        return entry

    def unknown_message(self, name: Any) -> str:
        """``unknown <what> 'x'; available: a, b, c`` plus a close match when there is one."""
        names = self.names()
        message = f"unknown {self.what} {name!r}; available: {', '.join(names) or 'none'}"
        if isinstance(name, str):
            folded = {canonical_name(n): n for n in names}
            close = difflib.get_close_matches(canonical_name(name), list(folded), n=1)
            if close:
                message += f" (did you mean {folded[close[0]]!r}?)"
        return message

    def get(self, name: str) -> T:
        """The entry registered as ``name``; :class:`UnknownNameError` listing the names otherwise."""
        return self._entry(name).value

    def resolve(self, name: str) -> str:
        """The registered spelling of ``name`` (e.g. ``"fashion_mnist"`` -> ``"fashion-mnist"``)."""
        return self._entry(name).name

    def metadata(self, name: str) -> dict[str, Any]:
        """A copy of the metadata given when ``name`` was registered."""
        return dict(self._entry(name).meta)

    def names(self) -> list[str]:
        """The registered names (as spelled when registered), sorted."""
        return sorted(entry.name for entry in self._entries.values())

    # -- dict-style, read-only -----------------------------------------------------------
    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and canonical_name(name) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[str]:
        return self.names()

    def values(self) -> list[T]:
        return [self.get(name) for name in self.names()]

    def items(self) -> list[tuple[str, T]]:
        return [(name, self.get(name)) for name in self.names()]

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self.names())})"


class MetadataView(Mapping[str, Any]):
    """Read-only mapping ``name -> registry.metadata(name)[key]`` (e.g. attack name -> kind)."""

    def __init__(self, registry: Registry[Any], key: str) -> None:
        self._registry, self._key = registry, key

    def __getitem__(self, name: str) -> Any:
        return self._registry.metadata(name)[self._key]

    def __contains__(self, name: object) -> bool:
        return name in self._registry

    def __iter__(self) -> Iterator[str]:
        return iter(self._registry)

    def __len__(self) -> int:
        return len(self._registry)

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return self[name] if name in self._registry else default
