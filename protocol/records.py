"""`record()`: immutable records (tuples with named fields) for PID 1's boot path and for
overlayctl's (protocol's messages, overlayd's definitions and config).

What `collections.namedtuple` gives overlayd's definitions (fields by name and position,
keyword construction, trailing defaults, `_replace`, `_fields`, equality and hashing of the
tuple) without importing `collections`, whose package pulls in `operator`, `keyword`,
`reprlib`, `itertools` and `heapq` (~1 ms of every boot) and builds each class with `exec`.
"""

from __future__ import annotations

from _operator import itemgetter

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable


def record(
    typename: str, field_names: str | Iterable[str], *, defaults: Iterable[object] = (),
    module: str | None = None, doc: str | None = None,
) -> type:
    """A tuple subclass named `typename` with these fields (a string is split on spaces);
    `defaults` apply to the last fields, as namedtuple's do."""
    fields = tuple(field_names.split() if isinstance(field_names, str) else field_names)
    defaults = tuple(defaults)
    default_of = dict(zip(fields[len(fields) - len(defaults) :], defaults, strict=True))
    count = len(fields)

    def __new__(cls, *args, **kwargs):
        if len(args) > count:
            raise TypeError(f"{typename}() takes {count} values, got {len(args)}")
        if kwargs or len(args) < count:
            values = list(args)
            for name in fields[len(args) :]:
                if name in kwargs:
                    values.append(kwargs.pop(name))
                elif name in default_of:
                    values.append(default_of[name])
                else:
                    raise TypeError(f"{typename}() is missing {name!r}")
            if kwargs:
                raise TypeError(f"{typename}() got unexpected or repeated {', '.join(kwargs)}")
            args = tuple(values)
        return tuple.__new__(cls, args)

    def _replace(self, **changes):
        values = [changes.pop(name, value) for name, value in zip(fields, self, strict=True)]
        return type(self)(*values, **changes)

    def __repr__(self) -> str:
        pairs = ", ".join(f"{name}={value!r}" for name, value in zip(fields, self, strict=True))
        return f"{type(self).__name__}({pairs})"

    def __getnewargs__(self):
        return tuple(self)

    namespace: dict[str, object] = {
        "__slots__": (), "__doc__": doc or f"{typename}({', '.join(fields)})",
        "__module__": module or __name__, "_fields": fields, "__new__": __new__,
        "_replace": _replace, "__repr__": __repr__, "__getnewargs__": __getnewargs__,
        "__match_args__": fields,
    }
    for index, name in enumerate(fields):
        namespace[name] = property(itemgetter(index), doc=f"field {index}: {name}")
    return type(typename, (tuple,), namespace)
