"""The dependency engine: a pure graph of services and the plans that bring sets up or down.

Nothing here touches processes or time. `Graph` holds one `Node` per name — atomic services
(`oneshot`, `longrun`) and `bundle`s (named sets) — and is checked once when built: every name
it refers to exists, and nothing depends on itself through any chain, or `GraphError` says
which (`a -> b -> a`, or the file that names an unknown service).

`Plan` is one transition as a state machine the caller drives: take `runnable()`, start those
(in parallel), report each `succeeded()` / `failed()`, repeat until `finished`. Going up, a
service becomes runnable as soon as everything it depends on has succeeded; a failure fails
every dependent in the plan (never started). Going down, a service is runnable once every
dependent in the plan is down; a failed stop still counts as down for that order, because a
shutdown must go on.

Two kinds of edge: `deps` (hard: "needs") and `after` (order only). Both order a plan; only
hard ones pull dependents down on `stop` — `legacy-services` orders itself after every
services.d service, yet stopping one of them must not stop what needs `legacy-services`.
"""

from __future__ import annotations

from protocol.records import record

ONESHOT = "oneshot"
LONGRUN = "longrun"
BUNDLE = "bundle"
KINDS = (ONESHOT, LONGRUN, BUNDLE)

Node = record("Node", ("name", "kind", "deps", "after", "contents", "source"))
Node.__doc__ = """One service or bundle. `deps`, `after`, `contents`: dicts name → the file
that names it (for error messages); `source`: where the node is defined."""


def node(
    name: str,
    kind: str,
    deps: dict[str, str] | None = None,
    after: dict[str, str] | None = None,
    contents: dict[str, str] | None = None,
    source: str = "",
) -> Node:
    """A Node with empty edges by default; `source` defaults to the name."""
    return Node(name, kind, deps or {}, after or {}, contents or {}, source or name)


class GraphError(ValueError):
    """The definitions cannot be used: an unknown name or a cycle, said in one line."""


class Graph:
    """Every node by name, checked for unknown names and cycles at construction."""

    def __init__(self, nodes: list[Node] | dict[str, Node]) -> None:
        listed = list(nodes.values()) if isinstance(nodes, dict) else list(nodes)
        self.nodes: dict[str, Node] = {}
        for item in listed:
            if item.kind not in KINDS:
                raise GraphError(f"{item.source}: unknown type {item.kind!r}")
            if item.name in self.nodes:
                raise GraphError(
                    f"{item.name} is defined twice: {self.nodes[item.name].source} "
                    f"and {item.source}"
                )
            self.nodes[item.name] = item
        self._check_names()
        self._check_cycles()
        self._atoms: dict[str, frozenset[str]] = {}
        self._hard: dict[str, frozenset[str]] = {}
        self._order: dict[str, frozenset[str]] = {}
        for name in self.nodes:
            self.atoms(name)
        for name, item in self.nodes.items():
            if item.kind != BUNDLE:
                self._hard[name] = self._expand(item.deps) - {name}
                self._order[name] = self._hard[name] | self._expand(item.after) - {name}
        self._dependents: dict[str, set[str]] = {name: set() for name in self._hard}
        for name, needs in self._hard.items():
            for dep in needs:
                self._dependents[dep].add(name)

    # --- checks ----------------------------------------------------------------------------
    def _edges(self, item: Node) -> dict[str, str]:
        return {**item.contents} if item.kind == BUNDLE else {**item.deps, **item.after}

    def _check_names(self) -> None:
        unknown = []
        for item in self.nodes.values():
            for name, where in self._edges(item).items():
                if name not in self.nodes:
                    unknown.append(f"{where} names {name!r}, which is not defined")
        if unknown:
            raise GraphError("unknown service name: " + "; ".join(sorted(unknown)))

    def _check_cycles(self) -> None:
        """Depth-first over deps, after and bundle contents; the first cycle found, in name
        order, is reported as the chain that closes it."""
        state: dict[str, int] = {}  # 1 on the current path, 2 finished
        for root in sorted(self.nodes):
            if state.get(root):
                continue
            path = [root]
            state[root] = 1
            stack = [iter(sorted(self._edges(self.nodes[root])))]
            while stack:
                nxt = next(stack[-1], None)
                if nxt is None:
                    stack.pop()
                    state[path.pop()] = 2
                    continue
                seen = state.get(nxt)
                if seen == 1:
                    cycle = [*path[path.index(nxt) :], nxt]
                    raise GraphError("dependency cycle: " + " -> ".join(cycle))
                if seen is None:
                    state[nxt] = 1
                    path.append(nxt)
                    stack.append(iter(sorted(self._edges(self.nodes[nxt]))))

    # --- queries ---------------------------------------------------------------------------
    def __contains__(self, name: object) -> bool:
        return name in self.nodes

    def kind(self, name: str) -> str:
        return self.nodes[name].kind

    def atoms(self, name: str) -> frozenset[str]:
        """The atomic services a name stands for: itself, or a bundle's members, recursively."""
        found = self._atoms.get(name)
        if found is not None:
            return found
        stack = [name]  # iterative: bundles nest as deep as an image likes (no cycles: checked)
        while stack:
            top = stack[-1]
            item = self.nodes[top]
            if item.kind != BUNDLE:
                self._atoms[top] = frozenset((top,))
                stack.pop()
                continue
            missing = [n for n in item.contents if n not in self._atoms]
            if missing:
                stack.extend(missing)
                continue
            self._atoms[top] = frozenset().union(*(self._atoms[n] for n in item.contents))
            stack.pop()
        return self._atoms[name]

    def _expand(self, names: dict[str, str] | set[str] | frozenset[str]) -> frozenset[str]:
        return frozenset().union(*(self.atoms(n) for n in names))

    def up_closure(self, names: set[str] | list[str]) -> set[str]:
        """Every atomic service needed to bring `names` up (bundles expanded, dependencies
        followed, order-only ones too: what `top` pulls in must come up with it)."""
        return self._reach(names, self._order)

    def dependents_closure(self, names: set[str] | list[str]) -> set[str]:
        """Every atomic service that needs one of `names`, through any chain of hard
        dependencies, plus `names` themselves (bundles expanded)."""
        return self._reach(names, self._dependents)

    def _reach(self, names: set[str] | list[str],
               edges: dict[str, frozenset[str]] | dict[str, set[str]]) -> set[str]:
        pending = list(self._expand(set(names)))
        found: set[str] = set()
        while pending:
            name = pending.pop()
            if name not in found:
                found.add(name)
                pending.extend(edges[name])
        return found

    def plan_up(self, names: set[str] | list[str], active: set[str]) -> Plan:
        """Bring `names` up: everything in their closure that is not already up."""
        targets = self.up_closure(names) - set(active)
        return Plan(targets, {t: set(self._order[t]) & targets for t in targets}, True)

    def plan_down(self, names: set[str] | list[str], active: set[str]) -> Plan:
        """Take `names` down, and first every active service that needs them."""
        targets = self.dependents_closure(names) & set(active)
        waits: dict[str, set[str]] = {t: set() for t in targets}
        for target in targets:
            for before in self._order[target] & targets:
                waits[before].add(target)  # `target` is after `before`: it goes down first
        return Plan(targets, waits, False)


class Plan:
    """One transition of a set of atomic services; see the module docstring."""

    def __init__(self, targets: set[str], waits: dict[str, set[str]], going_up: bool) -> None:
        self.targets = frozenset(targets)
        self.going_up = going_up
        self._waits = waits
        self._waited_by: dict[str, set[str]] = {t: set() for t in targets}
        for name, firsts in waits.items():
            for first in firsts:
                self._waited_by[first].add(name)
        self.launched: set[str] = set()
        self.done: set[str] = set()
        self.failed: dict[str, str] = {}  # name → why (its own failure, or a dependency's)

    @property
    def finished(self) -> bool:
        return len(self.done) + len(self.failed) == len(self.targets)

    @property
    def pending(self) -> set[str]:
        """Launched and not yet reported."""
        return self.launched - self.done - set(self.failed)

    def runnable(self) -> list[str]:
        """Services whose turn has come and that were not handed out yet (marked launched),
        in name order."""
        ready = sorted(
            name
            for name in self.targets
            if name not in self.launched and name not in self.failed and not self._waits[name]
        )
        self.launched.update(ready)
        return ready

    def succeeded(self, name: str) -> None:
        if name not in self.targets or name in self.done or name in self.failed:
            return
        self.done.add(name)
        self._release(name)

    def failed_with(self, name: str, reason: str) -> list[str]:
        """Report a failure. Going up, every dependent in the plan fails with it (returned, in
        name order); going down, the order goes on as if it had stopped."""
        if name not in self.targets or name in self.done or name in self.failed:
            return []
        self.failed[name] = reason
        if not self.going_up:
            self._release(name)
            return []
        blocked = []
        pending = sorted(self._waited_by[name])
        while pending:
            dependent = pending.pop(0)
            if dependent in self.failed or dependent in self.launched:
                continue
            self.failed[dependent] = f"{name} failed"
            blocked.append(dependent)
            pending.extend(sorted(self._waited_by[dependent]))
        return sorted(blocked)

    def _release(self, name: str) -> None:
        for waiter in self._waited_by[name]:
            self._waits[waiter].discard(name)


def dry_run(plan: Plan) -> list[str]:
    """The order a plan would take if every step succeeded (waves in name order)."""
    order: list[str] = []
    while not plan.finished:
        wave = plan.runnable()
        order += wave
        for name in wave:
            plan.succeeded(name)
    return order
