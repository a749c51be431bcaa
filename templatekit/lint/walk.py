"""Fast AST walks for rules: each tree is indexed once, then every rule's walk skips what it cannot see.

About thirty rules walk every template's tree with ``visit_<NodeType>`` handlers. Jinja's
``NodeVisitor`` finds a node's children by reflecting over its fields and its handler by building
a method name, on every visit, and it descends into every subtree whether or not the rule handles
anything there. ``TreeIndex`` records, once per lint target, each node's children and the set of
node types below it (a bit mask); a rule's walk then only enters subtrees holding a type it has a
handler for. Entering any other subtree would only recurse through ``generic_visit`` without
calling a handler, so the handlers run on the same nodes in the same order as before.
"""

from __future__ import annotations

from typing import Any

from jinja2 import nodes

# One bit per node type, assigned as types are first seen (extensions may add node types).
_TYPE_BITS: dict[type, int] = {}


def type_bit(kind: type) -> int:
    bit = _TYPE_BITS.get(kind)
    if bit is None:
        bit = _TYPE_BITS[kind] = 1 << len(_TYPE_BITS)
    return bit


class TreeIndex:
    """Children and subtree type masks of every node of one tree, keyed by ``id``.

    The index keeps every node alive (``children`` values hold them), so no id in it can be
    reused by another object while the index exists.
    """

    def __init__(self, tree: nodes.Node) -> None:
        self.children: dict[int, tuple[nodes.Node, ...]] = {}
        self.masks: dict[int, int] = {}
        self.types: set[type] = set()
        self.root = tree
        heights: dict[int, int] = {}  # nodes on the longest path down from each node
        # Iterative post-order: hostile templates nest deeper than Python's recursion limit.
        # Children are collected as Node.iter_child_nodes does (fields in order, lists flattened),
        # inline, since this runs on every node of every template.
        stack: list[tuple[nodes.Node, bool]] = [(tree, False)]
        children, masks, types = self.children, self.masks, self.types
        node_class = nodes.Node
        while stack:
            node, expanded = stack.pop()
            key = id(node)
            if expanded:
                mask = type_bit(type(node))
                height = 0
                for child in children[key]:
                    mask |= masks.get(id(child), -1)  # -1: unknown, so never skipped
                    height = max(height, heights.get(id(child), 0))
                masks[key] = mask
                heights[key] = height + 1
                continue
            if key in children:
                continue  # a node reachable twice (Jinja never shares nodes, but be safe)
            kind = type(node)
            kids: list[nodes.Node] = []
            for field in kind.fields:
                try:
                    value = getattr(node, field)
                except AttributeError:
                    continue
                if isinstance(value, list):
                    kids += [item for item in value if isinstance(item, node_class)]
                elif isinstance(value, node_class):
                    kids.append(value)
            children[key] = kids = tuple(kids)
            types.add(kind)
            stack.append((node, True))
            for child in reversed(kids):
                if id(child) not in children:
                    stack.append((child, False))
        # How deep the tree goes: Jinja parses long chains (`a and b and ...`) in a loop but
        # compiles them recursively, so depth is what decides whether a parsed template compiles.
        self.depth = heights.get(id(tree), 0)

    def handled_mask(self, visitor: Any) -> int:
        """The bits of the node types in this tree that ``visitor`` has a handler for."""
        mask = 0
        for kind in self.types:
            if getattr(visitor, f"visit_{kind.__name__}", None) is not None:
                mask |= type_bit(kind)
        return mask


def tree_index(target: Any) -> TreeIndex | None:
    """The shared index of ``target.tree`` (None when the template does not parse)."""
    if target is None or target.tree is None:
        return None
    return target.shared("ast:index", _build_index)


def _build_index(target: Any) -> TreeIndex:
    return TreeIndex(target.tree)


def child_nodes(target: Any, node: nodes.Node) -> tuple[nodes.Node, ...]:
    """``node.iter_child_nodes()`` as a tuple, from the target's index when ``node`` is in its tree."""
    index = tree_index(target)
    children = index.children.get(id(node)) if index is not None else None
    return children if children is not None else tuple(node.iter_child_nodes())


def find_all(target: Any, node: nodes.Node, kinds: type | tuple[type, ...]) -> list[nodes.Node]:
    """``list(node.find_all(kinds))`` (the nodes below ``node`` of those types, in tree order),
    through the target's index: subtrees holding none of those types are not entered."""
    index = tree_index(target)
    if index is None or id(node) not in index.children:
        return list(node.find_all(kinds))
    wanted = 0
    for kind in index.types:
        if issubclass(kind, kinds):
            wanted |= type_bit(kind)
    found: list[nodes.Node] = []
    if not wanted:
        return found
    children, masks = index.children, index.masks
    stack = list(reversed(children[id(node)]))
    while stack:
        child = stack.pop()
        if isinstance(child, kinds):
            found.append(child)
        if masks.get(id(child), -1) & wanted:
            stack.extend(reversed(children.get(id(child), ())))
    return found
