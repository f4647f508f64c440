"""``@record``: a frozen, slotted data class built without compiling code. Imports nothing heavy.

``@dataclass(frozen=True, slots=True)`` generates and compiles several methods per class
(and slots=True builds each class twice); with twenty of them that was a third of the
``sjq`` command's start-up. A record has the same shape — positional or keyword
construction with defaults, ``__match_args__``, equality, hashing, a readable repr,
immutability, pickling — from shared generic methods. Type checkers treat it as a
dataclass (PEP 681). ``_replace(**changes)`` and ``_fields`` are as on a namedtuple.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from typing import dataclass_transform
else:

    def dataclass_transform(**_kwargs: object) -> Any:
        return lambda f: f


__all__ = ["fields", "record"]

T = TypeVar("T")
_MISSING: Any = object()


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    names = self._fields
    if len(args) > len(names):
        raise TypeError(f"{type(self).__name__}() takes {len(names)} arguments, got {len(args)}")
    setter = object.__setattr__
    for name, value in zip(names, args, strict=False):
        if name in kwargs:
            raise TypeError(f"{type(self).__name__}() got multiple values for {name!r}")
        setter(self, name, value)
    for name, default in zip(names[len(args) :], self._defaults[len(args) :], strict=True):
        if name in kwargs:
            setter(self, name, kwargs.pop(name))
        elif default is _MISSING:
            raise TypeError(f"{type(self).__name__}() missing argument {name!r}")
        else:
            setter(self, name, default)
    if kwargs:
        raise TypeError(f"{type(self).__name__}() got unexpected arguments {', '.join(kwargs)}")


def _values(self: Any) -> tuple[Any, ...]:
    return tuple(getattr(self, n) for n in self._fields)


def _repr(self: Any) -> str:
    inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields)
    return f"{type(self).__qualname__}({inner})"


def _eq(self: Any, other: object) -> Any:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _values(self) == _values(other)


def _hash(self: Any) -> int:
    return hash(_values(self))


def _frozen(self: Any, name: str, value: Any = None) -> None:
    from dataclasses import FrozenInstanceError  # noqa: PLC0415 - only when misused

    raise FrozenInstanceError(f"cannot assign to field {name!r} of a frozen {type(self).__name__}")


def _reduce(self: Any) -> tuple[Any, tuple[Any, ...]]:
    return type(self), _values(self)


def _replace(self: Any, **changes: Any) -> Any:
    return type(self)(**{n: changes.pop(n, getattr(self, n)) for n in self._fields}, **changes)


@dataclass_transform(frozen_default=True)
def record(cls: type[T]) -> type[T]:
    """Make ``cls`` (annotated fields, optional defaults) a frozen slotted record."""
    # The class's own annotations, in order (inspect.get_annotations would cost an import).
    names = tuple(cls.__dict__.get("__annotations__", {}))  # noqa: RUF063
    skip = {*names, "__dict__", "__weakref__"}
    ns = {k: v for k, v in cls.__dict__.items() if k not in skip}
    ns.update(
        __slots__=names,
        __match_args__=names,
        _fields=names,
        _defaults=tuple(cls.__dict__.get(n, _MISSING) for n in names),
        __init__=_init,
        __repr__=_repr,
        __eq__=_eq,
        __hash__=_hash,
        __setattr__=_frozen,
        __delattr__=_frozen,
        __reduce__=_reduce,
        _replace=_replace,
    )
    return type(cls.__name__, cls.__bases__, ns)


def fields(cls: type) -> tuple[str, ...]:
    """The field names of a record class, in order."""
    names: tuple[str, ...] = cls._fields  # type: ignore[attr-defined]
    return names
