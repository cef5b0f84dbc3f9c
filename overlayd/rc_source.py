"""Reading s6-overlay v3 trees: s6-rc source definitions, as s6-rc-compile reads them.

`read_tree()` reads `<profile>/s6-rc.d/NAME/` (and the user bundles from `user-bundles.d/`),
adds the names s6-overlay itself supplies, and returns one `RcDef` per name plus the warnings
to log. Anything s6-rc-compile would refuse raises `RcSourceError`, one line naming the file;
the boot then stops before anything runs (exit 100), as a failed compile would.

s6-overlay's own names (reference §2, §7.3):

    fix-attrs          oneshot (built in: fix-attrs.d)
    legacy-cont-init   oneshot (built in: cont-init.d up, cont-finish.d down), after fix-attrs
    base               bundle {fix-attrs, legacy-cont-init}
    user, user2        bundles of the image's services (empty when the image has none)
    legacy-services    services.d: needs base and user; up once every services.d service is
    top                bundle {base, user, legacy-services, user2}: what the boot brings up
"""

from __future__ import annotations

import os

from protocol.records import record

from .depgraph import BUNDLE, KINDS, LONGRUN, ONESHOT
from .smallfile import read_small

MAX_SMALL_FILE = 4096  # type, timeouts, names: a few bytes; more is read no further
MAX_LIST_FILE = 64 * 1024  # the old `dependencies` / `contents` list files
MAX_DEATH_TALLY = 4096

FIX_ATTRS = "fix-attrs"
LEGACY_CONT_INIT = "legacy-cont-init"
LEGACY_SERVICES = "legacy-services"
BASE = "base"
USER = "user"
USER2 = "user2"
TOP = "top"
SUPPLIED = (FIX_ATTRS, LEGACY_CONT_INIT, BASE, LEGACY_SERVICES, TOP)
BUILTIN_ONESHOTS = (FIX_ATTRS, LEGACY_CONT_INIT, LEGACY_SERVICES)
RESERVED_PREFIXES = ("s6rc-", "s6-rc-")

RcDef = record(
    "RcDef",
    (
        "name",
        "kind",  # oneshot | longrun | bundle
        "source",  # the definition directory, or "s6-overlay" for a supplied name
        "dependencies",  # dict name → the file naming it
        "contents",  # bundles: dict name → the file naming it
        "timeout_up_ms",  # 0 = no bound
        "timeout_down_ms",
        "up",  # oneshots: (path, words, has_block); None for built-ins
        "down",  # oneshots: (path, words, has_block) or None
        "service",  # longruns: the scan.ServiceDef of the directory
        "producer_for",  # longruns: a name or None
        "consumer_for",  # longruns: tuple of names
        "pipeline_name",  # the last consumer of a pipeline: a bundle name, or None
        "builtin",  # supplied by s6-overlay and run by overlayd itself
    ),
)


class RcSourceError(ValueError):
    """A definition s6-rc-compile would refuse; the message names the file."""


def _read_small(path: str, limit: int = MAX_SMALL_FILE) -> str | None:
    """At most `limit` bytes of a file (smallfile.read_small: a FIFO reads as empty), or
    None when there is none; RcSourceError naming it when it cannot be read."""
    try:
        data = read_small(path, limit)
    except IsADirectoryError:
        raise RcSourceError(f"{path} is a directory, not a file") from None
    except OSError as exc:
        raise RcSourceError(f"{path}: cannot read: {exc.strerror}") from None
    return None if data is None else data.decode("utf-8", "surrogateescape")


def _listing(directory: str) -> frozenset[str]:
    """The names in one definition directory: the files it lacks are then not even tried."""
    try:
        return frozenset(os.listdir(directory))
    except OSError as exc:
        raise RcSourceError(f"{directory}: cannot read: {exc.strerror}") from None


def check_name(name: str, where: str) -> str:
    """A service name as s6-rc accepts it; RcSourceError naming `where` otherwise."""
    if not name or "/" in name or "\n" in name or "\0" in name:
        raise RcSourceError(f"{where}: {name!r} is not a valid service name")
    if name.startswith(RESERVED_PREFIXES):
        raise RcSourceError(f"{where}: {name!r} uses a reserved prefix (s6rc- or s6-rc-)")
    return name


def read_names(directory: str, base: str,
               present: frozenset[str] | None = None) -> dict[str, str]:
    """The names in `base.d/` (one empty file each) and in the old `base` list file (one per
    line, blank lines and `#` comments skipped): name → the file that names it. `present`:
    the directory's listing, when the caller has it."""
    found: dict[str, str] = {}
    listing = os.path.join(directory, base + ".d")
    try:
        entries = sorted(os.listdir(listing)) if present is None or base + ".d" in present else []
    except FileNotFoundError:
        entries = []
    except NotADirectoryError:
        raise RcSourceError(f"{listing} is not a directory") from None
    except OSError as exc:
        raise RcSourceError(f"{listing}: cannot read: {exc.strerror}") from None
    for entry in entries:
        if not entry.startswith("."):
            where = os.path.join(listing, entry)
            found[check_name(entry, where)] = where
    if present is not None and base not in present:
        return found
    old = os.path.join(directory, base)
    text = _read_small(old, MAX_LIST_FILE)
    if text is not None:
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                found.setdefault(check_name(line, old), old)
    return found


def _read_ms(directory: str, filename: str, present: frozenset[str]) -> int:
    if filename not in present:
        return 0
    path = os.path.join(directory, filename)
    text = _read_small(path)
    if text is None or not text.strip():
        return 0
    value = text.strip()
    if not (value.isascii() and value.isdigit()):
        raise RcSourceError(f"{path} holds {value!r}, not a whole number of milliseconds")
    return int(value)


def _read_one_name(directory: str, filename: str, present: frozenset[str]) -> str | None:
    if filename not in present:
        return None
    path = os.path.join(directory, filename)
    text = _read_small(path)
    if text is None:
        return None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        raise RcSourceError(f"{path} must hold exactly one service name")
    return check_name(lines[0], path)


def _oneshot_script(directory: str, filename: str, required: bool,
                    present: frozenset[str]) -> tuple | None:
    from .execline_lex import ExeclineSyntaxError, lex_file

    path = os.path.join(directory, filename)
    if filename not in present:
        if required:
            raise RcSourceError(f"{path} is missing (a oneshot needs an up file)")
        return None
    try:
        words, has_block = lex_file(path)
    except ExeclineSyntaxError as exc:
        raise RcSourceError(str(exc)) from None
    return (path, tuple(words), has_block)


def _longrun_service(name: str, directory: str, notes: list[str],
                     present: frozenset[str]):  # -> scan.ServiceDef
    from .scan import read_service

    service = read_service(name, directory, is_logger=True)  # s6-rc ignores log/
    if service.problem:
        raise RcSourceError(service.problem)
    tally_path = os.path.join(directory, "max-death-tally")
    tally = _read_small(tally_path) if "max-death-tally" in present else None
    if tally is not None and tally.strip():
        value = tally.strip()
        if not (value.isascii() and value.isdigit()) or int(value) > MAX_DEATH_TALLY:
            raise RcSourceError(f"{tally_path} holds {value!r}, not a number from 0 to 4096")
    for ignored, why in (("down", "s6-rc has no down files"), ("log", "use producer-for")):
        if ignored in present:
            notes.append(f"{directory}/{ignored} is ignored, as s6-rc ignores it ({why})")
    return service._replace(normally_up=True)


def read_definition(name: str, directory: str, notes: list[str], *,
                    default_type: str | None = None) -> RcDef:
    """One source definition directory. `default_type` applies when there is no `type` file
    (the user bundles s6-overlay would supply)."""
    check_name(name, directory)
    present = _listing(directory)
    type_path = os.path.join(directory, "type")
    text = _read_small(type_path) if "type" in present else None
    kind = text.strip() if text is not None else default_type
    if kind is None:
        raise RcSourceError(f"{type_path} is missing (oneshot, longrun or bundle)")
    if kind not in KINDS:
        raise RcSourceError(f"{type_path} holds {kind!r}, not oneshot, longrun or bundle")
    empty: dict[str, str] = {}
    if kind == BUNDLE:
        return RcDef(name, kind, directory, empty, read_names(directory, "contents", present), 0, 0,
                     None, None, None, None, (), None, False)
    dependencies = read_names(directory, "dependencies", present)
    timeout_up = _read_ms(directory, "timeout-up", present)
    timeout_down = _read_ms(directory, "timeout-down", present)
    if kind == ONESHOT:
        return RcDef(name, kind, directory, dependencies, empty, timeout_up, timeout_down,
                     _oneshot_script(directory, "up", True, present),
                     _oneshot_script(directory, "down", False, present), None, None, (), None,
                     False)
    service = _longrun_service(name, directory, notes, present)
    consumer_for = read_names(directory, "consumer-for", present)
    return RcDef(name, kind, directory, dependencies, empty, timeout_up, timeout_down, None, None,
                 service, _read_one_name(directory, "producer-for", present),
                 tuple(consumer_for), _read_one_name(directory, "pipeline-name", present), False)


def read_source_dir(source: str, notes: list[str], *, default_type: str | None = None,
                    bundle_names: tuple[str, ...] = ()) -> dict[str, RcDef]:
    """Every definition directory in `source` (dotted names and plain files skipped, as
    s6-rc-compile does). `bundle_names` get `default_type` 'bundle' when untyped."""
    try:
        entries = sorted(os.scandir(source), key=lambda entry: entry.name)
    except FileNotFoundError:
        return {}
    except PermissionError as exc:
        # As for services.d: a tree this uid may not read (or not even see) is one warning,
        # not a boot error; a non-root container over a root-only tree still starts.
        notes.append(f"cannot read {source}: {exc.strerror}; its definitions are ignored")
        return {}
    except OSError as exc:
        raise RcSourceError(f"{source}: cannot read: {exc.strerror}") from None
    found = {}
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        default = BUNDLE if entry.name in bundle_names else default_type
        found[entry.name] = read_definition(entry.name, entry.path, notes, default_type=default)
    return found


def _supplied(name: str, kind: str, dependencies: tuple[str, ...] = (),
              contents: tuple[str, ...] = ()) -> RcDef:
    where = "s6-overlay"
    return RcDef(name, kind, where, dict.fromkeys(dependencies, f"{where}: {name}"),
                 dict.fromkeys(contents, f"{where}: {name}"), 0, 0, None, None, None, None, (),
                 None, kind != BUNDLE)


def _merge(into: dict[str, RcDef], more: dict[str, RcDef]) -> None:
    for name, definition in more.items():
        if name in into:
            raise RcSourceError(
                f"{name} is defined twice: {into[name].source} and {definition.source}"
            )
        into[name] = definition


def _check_pipelines(defs: dict[str, RcDef]) -> dict[str, RcDef]:
    """producer-for / consumer-for agree, and each pipeline-name becomes a bundle of its
    pipeline (returned)."""
    for name, d in defs.items():
        if d.producer_for is not None:
            consumer = defs.get(d.producer_for)
            where = os.path.join(d.source, "producer-for")
            if consumer is None or consumer.kind != LONGRUN:
                raise RcSourceError(f"{where}: {d.producer_for!r} is not a longrun")
            if name not in consumer.consumer_for:
                raise RcSourceError(
                    f"{where} names {d.producer_for}, but {consumer.source}/consumer-for "
                    f"does not name {name}"
                )
        for producer_name in d.consumer_for:
            producer = defs.get(producer_name)
            where = os.path.join(d.source, "consumer-for")
            if producer is None or producer.kind != LONGRUN:
                raise RcSourceError(f"{where}: {producer_name!r} is not a longrun")
            if producer.producer_for != name:
                raise RcSourceError(
                    f"{where} names {producer_name}, but {producer.source}/producer-for "
                    f"does not name {name}"
                )
    bundles: dict[str, RcDef] = {}
    for name, d in defs.items():
        if d.pipeline_name is None:
            continue
        where = os.path.join(d.source, "pipeline-name")
        if d.producer_for is not None or not d.consumer_for:
            raise RcSourceError(f"{where}: only the last consumer of a pipeline may name it")
        members = pipeline_members(defs, name)
        bundles[d.pipeline_name] = RcDef(
            d.pipeline_name, BUNDLE, where, {}, dict.fromkeys(sorted(members), where), 0, 0,
            None, None, None, None, (), None, False,
        )
    return bundles


def pipeline_members(defs: dict[str, RcDef], consumer: str) -> set[str]:
    """The consumer and every producer upstream of it."""
    members: set[str] = set()
    pending = [consumer]
    while pending:
        name = pending.pop()
        if name in members:
            raise RcSourceError(f"{defs[name].source}: the pipeline loops back to {name}")
        members.add(name)
        pending.extend(defs[name].consumer_for)
    return members


def read_tree(profile_dir: str, bundle_dir: str | None = None,
              ) -> tuple[dict[str, RcDef], list[str]]:
    """Every name of one s6-overlay v3 tree: the image's definitions, its user bundles and
    s6-overlay's own names. Returns (name → RcDef, warnings to log)."""
    notes: list[str] = []
    rc_dir = os.path.join(profile_dir, "s6-rc.d")
    if bundle_dir is None:
        bundle_dir = os.path.join(profile_dir, "user-bundles.d")
    defs = read_source_dir(rc_dir, notes, bundle_names=(USER, USER2))
    if USER in defs:
        if os.path.isdir(bundle_dir):
            notes.append(f"{rc_dir}/user is deprecated; {bundle_dir} is ignored "
                         f"(move user and user2 to user-bundles.d)")
    else:
        _merge(defs, read_source_dir(bundle_dir, notes, default_type=BUNDLE))
    for name in (USER, USER2):
        found = defs.get(name)
        if found is None:
            defs[name] = _supplied(name, BUNDLE)
        elif found.kind != BUNDLE:
            raise RcSourceError(f"{found.source}/type: {name} must be a bundle")
    for name in SUPPLIED:
        if name in defs:
            raise RcSourceError(f"{defs[name].source}: {name} is s6-overlay's own name")
    defs[FIX_ATTRS] = _supplied(FIX_ATTRS, ONESHOT)
    defs[LEGACY_CONT_INIT] = _supplied(LEGACY_CONT_INIT, ONESHOT, (FIX_ATTRS,))
    defs[BASE] = _supplied(BASE, BUNDLE, contents=(FIX_ATTRS, LEGACY_CONT_INIT))
    defs[LEGACY_SERVICES] = _supplied(LEGACY_SERVICES, ONESHOT, (BASE, USER))
    defs[TOP] = _supplied(TOP, BUNDLE, contents=(BASE, USER, LEGACY_SERVICES, USER2))
    _merge(defs, _check_pipelines(defs))
    return defs, notes


def graph_nodes(defs: dict[str, RcDef], legacy: dict[str, tuple[dict[str, str], bool, str]],
                ) -> list:  # -> list[depgraph.Node]
    """The dependency graph's nodes for a v3 tree plus the services.d services.

    `legacy`: services.d name → (its dependencies.d names, normally up, its directory). Each
    needs `base` and `user` (they start where s6-overlay's legacy-services would), and
    `legacy-services` comes up after every normally-up one (order only). A producer needs its
    consumer, so the reader is there before the first line is written.
    """
    from .depgraph import node

    nodes = []
    order_after: dict[str, str] = {}
    for name, (deps, normally_up, directory) in legacy.items():
        implicit = {BASE: f"{directory} (services.d)", USER: f"{directory} (services.d)"}
        nodes.append(node(name, LONGRUN, deps={**implicit, **deps}, source=directory))
        if normally_up:
            order_after[name] = f"{directory} (services.d)"
    for name, d in defs.items():
        deps = dict(d.dependencies)
        if d.producer_for is not None:
            deps.setdefault(d.producer_for, os.path.join(d.source, "producer-for"))
        after = order_after if name == LEGACY_SERVICES else None
        nodes.append(node(name, d.kind, deps=deps, after=after, contents=d.contents,
                          source=d.source))
    return nodes
