"""``@record``: a small, fast-to-define stand-in for ``@dataclass(slots=True)``.

Defining a few dozen dataclasses costs a CLI about 20 ms at every start (``dataclasses`` pulls
in ``inspect``, and each class execs three generated methods); a forensic CLI run hundreds of
times from scripts should not pay that.  A record class declares its fields as annotations, in
order, required ones first; mutable defaults use ``field(default_factory=...)``.  The class gets
``__slots__``, an ``__init__`` taking every field (positionally or by name), value equality, a
readable repr, and ``__record_fields__`` (the field names, in order) which the outputs use.

Times are one type: a field annotated ``Timestamp`` holds integer nanoseconds since the epoch
(UTC); :func:`to_dict` -- and so every machine output -- renders it as RFC 3339 UTC with nine
fractional digits (:mod:`pensieve.times`). ``__record_times__`` names those fields.
"""

from __future__ import annotations

from typing import Any, NewType

from pensieve.times import iso_ns

__all__ = ["Problem", "Timestamp", "field", "fields", "is_record", "record", "record_fields", "to_dict"]

#: a time: integer nanoseconds since the epoch, UTC (rendered RFC 3339 in every output)
Timestamp = NewType("Timestamp", int)

_MISSING: Any = type("_Missing", (), {"__repr__": lambda self: "<missing>"})()


class _Factory:
    __slots__ = ("make",)

    def __init__(self, make) -> None:
        self.make = make


def field(*, default_factory) -> Any:
    """A mutable default: ``tags: list[str] = field(default_factory=list)``."""
    return _Factory(default_factory)


def _repr(self) -> str:
    inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__record_fields__)
    return f"{type(self).__name__}({inner})"


def _eq(self, other) -> bool:
    if type(other) is not type(self):
        return NotImplemented
    return all(getattr(self, n) == getattr(other, n) for n in self.__record_fields__)


def _init_source(cls: type, names: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    """The source of CLS's ``__init__`` over its fields NAMES, and the scope it runs in."""
    scope: dict[str, Any] = {"_MISSING": _MISSING}
    params, body = [], []
    for name in names:
        default = cls.__dict__.get(name, _MISSING)
        if default is _MISSING:
            params.append(name)
        elif isinstance(default, _Factory):
            scope[f"_f_{name}"] = default.make
            params.append(f"{name}=_MISSING")
            body.append(f"    self.{name} = _f_{name}() if {name} is _MISSING else {name}")
            continue
        else:
            scope[f"_d_{name}"] = default
            params.append(f"{name}=_d_{name}")
        body.append(f"    self.{name} = {name}")
    return f"def __init__(self, {', '.join(params)}):\n" + ("\n".join(body) or "    pass"), scope


def _lazy_init(source: str, scope: dict[str, Any], qualname: str):
    """An ``__init__`` that compiles the generated one at the first instance and puts it in its
    place on the class: a run pays ``compile`` only for the records it makes (start-up time;
    most commands make a few of the ~50 record types)."""
    owner: list[type] = []  # the class, once made

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        exec(source, scope)  # noqa: S102 - generated from the class's own field names
        real = scope["__init__"]
        real.__qualname__ = f"{qualname}.__init__"
        owner[0].__init__ = real
        real(self, *args, **kwargs)

    return __init__, owner


def record(cls: type) -> type:
    """Turn an annotated class body into a slotted record class."""
    annotations = cls.__dict__.get("__annotations__", {})
    names = tuple(annotations)
    times = tuple(n for n, a in annotations.items() if "Timestamp" in str(a))
    source, scope = _init_source(cls, names)
    init, owner = _lazy_init(source, scope, cls.__qualname__)
    namespace = {
        k: v for k, v in cls.__dict__.items() if k not in names and k not in ("__dict__", "__weakref__")
    }
    namespace.update(
        __slots__=names,
        __record_fields__=names,
        __record_times__=times,
        __init__=init,
        __repr__=namespace.get("__repr__", _repr),
        __eq__=_eq,
        __hash__=None,
    )
    new = type(cls)(cls.__name__, cls.__bases__, namespace)
    new.__qualname__ = cls.__qualname__
    owner.append(new)
    return new


def is_record(obj: Any) -> bool:
    return hasattr(type(obj), "__record_fields__")


def fields(obj_or_cls: Any) -> tuple[str, ...]:
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    return cls.__record_fields__


_SCALARS = (str, int, float, bool, type(None))


def record_fields(cls: type) -> tuple[str, ...] | None:
    """Field names of a record class (or of any dataclass), None for anything else."""
    names = getattr(cls, "__record_fields__", None)
    if names is None and hasattr(cls, "__dataclass_fields__"):
        names = tuple(cls.__dataclass_fields__)
    return names


def to_dict(record: Any, memo: dict[int, Any] | None = None) -> Any:
    """Turn a record (or a list/dict of records) into JSON-ready builtins.

    MEMO (id -> result) lets records shared between others (an image's layers, listed under
    every container of the image) be converted once; keep the records alive while it is used.
    """
    cls = type(record)
    if cls in _SCALARS:
        return record
    names = record_fields(cls)
    if names is not None:
        if memo is not None:
            done = memo.get(id(record))
            if done is not None:
                return done
        out = {}
        for name in names:
            value = getattr(record, name)
            out[name] = value if type(value) in _SCALARS else to_dict(value, memo)
        for name in getattr(cls, "__record_times__", ()):
            value = out[name]
            if type(value) is int:
                out[name] = iso_ns(value)
        if memo is not None:
            memo[id(record)] = out
        return out
    if isinstance(record, (list, tuple)):
        return [r if type(r) in _SCALARS else to_dict(r, memo) for r in record]
    if isinstance(record, dict):
        return {k: v if type(v) in _SCALARS else to_dict(v, memo) for k, v in record.items()}
    if isinstance(record, bytes):
        return record.decode("utf-8", "backslashreplace")
    return record


@record
class Problem:
    """Something that could not be read or parsed; reported, never fatal for the rest."""

    source: str  # evidence path the problem is about
    message: str
    subject: str | None = None  # container/image/layer id when known
    severity: str = "warning"  # warning | error
