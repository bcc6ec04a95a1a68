"""The package's import graph, read with `ast` (nothing is imported): no cycles, counting the
imports inside functions too, and a TensorFlow-free runtime side.

A function-local import would hide a cycle from Python at import time; it is still an edge
here. The runtime rule is transitive: `kdq_tf.runtime.*` must not reach, through any chain of
kdq_tf modules, a module that imports TensorFlow, Keras or TF-MOT.
"""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "kdq_tf"
TF_ROOTS = ("tensorflow", "tf_keras", "keras", "tensorflow_model_optimization", "kdq_tf._keras")


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, known: set[str]) -> tuple[set[str], set[str]]:
    """(kdq_tf modules imported, third-party roots imported), anywhere in the file.

    `from kdq_tf.x import y` counts as kdq_tf.x.y when that is a module, else kdq_tf.x;
    imports under `if TYPE_CHECKING:` do not run and are left out.
    """
    tree = ast.parse(path.read_text())
    skip = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If)
        and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING"
        for n in ast.walk(node)
    }
    me = module_name(path)
    pkg = me if path.name == "__init__.py" else me.rpartition(".")[0]
    ours, theirs = set(), set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        else:
            continue
        for n in names:
            if n == "kdq_tf" or n.startswith("kdq_tf."):
                target = n
                while target not in known and "." in target:
                    target = target.rpartition(".")[0]
                if target != me:
                    ours.add(target)
                if n.startswith("kdq_tf._keras"):
                    theirs.add("kdq_tf._keras")
            else:
                theirs.add(n.split(".")[0])
    return ours, theirs


def graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    paths = {module_name(p): p for p in PKG.rglob("*.py")}
    known = set(paths)
    edges, third = {}, {}
    for name, path in paths.items():
        edges[name], third[name] = imports_of(path, known)
    return edges, third


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None; depth-first search."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            if n == "kdq_tf":  # the lazy public API imports nothing at module level
                continue
            if state.get(n) == "open":
                return stack[stack.index(n) :] + [n]
            if n not in state and (c := visit(n)):
                return c
        stack.pop()
        state[m] = "done"
        return None

    for m in sorted(edges):
        if m not in state and (c := visit(m)):
            return c
    return None


def reach(edges: dict[str, set[str]], start: str) -> dict[str, str]:
    """Every module `start` reaches, each with the module it was reached from."""
    seen, todo = {start: ""}, [start]
    while todo:
        m = todo.pop()
        for n in edges.get(m, ()):
            if n not in seen and n != "kdq_tf":
                seen[n] = m
                todo.append(n)
    return seen


def test_the_graph_is_read():
    # 1. The reader finds known edges, local ones included (independent truth: the sources).
    edges, third = graph()
    assert "kdq_tf.runs" in edges["kdq_tf.pipeline"]
    assert "kdq_tf.data.augment" in edges["kdq_tf.data.dataset"]  # imported inside a function
    assert "kdq_tf._keras" in third["kdq_tf.distill.losses"]
    assert "tensorflow" in third["kdq_tf._keras"] or "tf_keras" in third["kdq_tf._keras"]
    # 2. A made-up cycle is found.
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    edges, _ = graph()
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("module", sorted(m for m in graph()[0] if m.startswith("kdq_tf.runtime")))
def test_runtime_reaches_no_tensorflow_side_module(module):
    edges, third = graph()
    tf_side = {m for m, roots in third.items() if roots & set(TF_ROOTS)}
    via = reach(edges, module)
    bad = sorted(set(via) & tf_side - {module})
    assert not bad, f"{module} reaches TensorFlow-side {bad[0]} via " + " <- ".join(
        _chain(via, bad[0])
    )


def _chain(via: dict[str, str], m: str) -> list[str]:
    out = [m]
    while via.get(out[-1]):
        out.append(via[out[-1]])
    return out
