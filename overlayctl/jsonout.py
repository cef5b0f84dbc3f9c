"""`--json` output without importing `json`: that package pulls in `re` (~8 ms, more than half
a bare interpreter start), for its decoder, which printing never needs.

`dumps(obj, indent)` writes what `json.dumps(obj, indent=indent, default=str)` writes (with
`separators=(",", ":")` when `indent` is None) for the values overlayd sends: dicts with str
keys, lists, tuples, str, int, float, bool, None. Strings are quoted by the C function `json`
itself uses. tests/test_overlayctl_unit.py checks the output against `json.dumps`.
"""

from __future__ import annotations

from _json import encode_basestring_ascii as _quote

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _float(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return float.__repr__(value)


def _key(key: object) -> str:
    if isinstance(key, str):
        return key
    if key is True or key is False or key is None:
        return {True: "true", False: "false", None: "null"}[key]
    if isinstance(key, float):
        return _float(key)
    return str(key)


def _write(obj: Any, out: list[str], indent: int | None, level: int) -> None:
    if obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, str):
        out.append(_quote(obj))
    elif isinstance(obj, int):
        out.append(int.__repr__(obj))
    elif isinstance(obj, float):
        out.append(_float(obj))
    elif isinstance(obj, (list, tuple, dict)):
        is_dict = isinstance(obj, dict)
        if not obj:
            out.append("{}" if is_dict else "[]")
            return
        inner = "" if indent is None else "\n" + " " * (indent * (level + 1))
        out.append("{" if is_dict else "[")
        for i, item in enumerate(obj.items() if is_dict else obj):
            out.append(("," if i else "") + inner)
            if is_dict:
                key, item = item
                out.append(_quote(_key(key)) + (":" if indent is None else ": "))
            _write(item, out, indent, level + 1)
        close = "}" if is_dict else "]"
        out.append(close if indent is None else "\n" + " " * (indent * level) + close)
    else:
        out.append(_quote(str(obj)))


def dumps(obj: Any, indent: int | None = None) -> str:
    """JSON text for `obj`, as `json.dumps(obj, indent=indent, default=str)` would write it."""
    out: list[str] = []
    _write(obj, out, indent, 0)
    return "".join(out)
