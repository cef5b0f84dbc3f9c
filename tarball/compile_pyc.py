"""Run by the archive's own interpreter at build time: sources → sourceless .pyc.

Reads JSON lines `[source, destination, name_in_the_image, optimize]` on stdin (optimize 2:
no docstrings nor asserts, for all but overlayctl, whose docstrings are its --help).
Hash-based, unchecked .pyc (no source mtime inside, and nothing to check at import: there is
no source), the image's path as co_filename (tracebacks name it, and no build path leaks into
the archive). Run with PYTHONHASHSEED=0 so set and frozenset constants marshal in the same
order every build.

`from __future__ import annotations` is compiled as the flag it stands for, without the
statement: the code is the same (annotations stay strings), but no start of /init or
overlayctl imports the `__future__` module for it (~0.1 ms each). The module loses only the
global name `annotations` the statement would have bound.
"""

import __future__

import ast
import importlib.util
import json
import os
import sys
from importlib._bootstrap_external import _code_to_hash_pyc  # what py_compile writes

FLAGS = __future__.annotations.compiler_flag


def _drop_future_annotations(tree: ast.Module) -> int:
    """Remove top-level `from __future__ import annotations`; the compiler flags it stood for."""
    kept = []
    flags = 0
    for node in tree.body:
        if (isinstance(node, ast.ImportFrom) and node.module == "__future__"
                and [alias.name for alias in node.names] == ["annotations"]
                and node.names[0].asname is None):
            flags |= FLAGS
            continue
        kept.append(node)
    tree.body = kept
    return flags


def compile_one(source: str, destination: str, shown: str, optimize: int) -> None:
    with open(source, "rb") as file:
        data = file.read()
    tree = ast.parse(data, filename=shown)
    flags = _drop_future_annotations(tree)
    code = compile(tree, shown, "exec", flags=flags, dont_inherit=True, optimize=optimize)
    pyc = _code_to_hash_pyc(code, importlib.util.source_hash(data), checked=False)
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    with open(destination, "wb") as file:
        file.write(pyc)


def main() -> None:
    for line in sys.stdin:
        compile_one(*json.loads(line))


if __name__ == "__main__":
    main()
