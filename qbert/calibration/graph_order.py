"""Graph bookkeeping emission needs once it has rewired a model: a valid node order, no dead initializers."""
from __future__ import annotations

from typing import Any

from qbert.errors import InternalError


def toposort(nodes: list[Any], model: Any) -> list[Any]:
    """The nodes in an order ONNX accepts (each after its inputs' producers): emission appends new nodes and
    rewires old ones, so the graph's order must be rebuilt once at the end."""
    ready = {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer} | {""}
    producers: dict[str, int] = {}
    for i, n in enumerate(nodes):
        for o in n.output:
            producers[o] = i
    order, placed, visiting = [], set(), set()

    def visit(i: int) -> None:
        stack = [(i, False)]
        while stack:
            j, done = stack.pop()
            if j in placed:
                continue
            if done:
                placed.add(j)
                order.append(nodes[j])
                continue
            if j in visiting:
                raise InternalError("cycle while emitting the Q/DQ graph")
            visiting.add(j)
            stack.append((j, True))
            for x in nodes[j].input:
                if x not in ready and x in producers and producers[x] not in placed:
                    stack.append((producers[x], False))

    for i in range(len(nodes)):
        visit(i)
    return order


def drop_unused_initializers(model: Any) -> None:
    """Delete in place (rebuilding the repeated field would copy every weight once more)."""
    used = {x for n in model.graph.node for x in n.input}
    inits = model.graph.initializer
    for i in reversed(range(len(inits))):
        if inits[i].name not in used:
            del inits[i]
