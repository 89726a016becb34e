"""Where values live: every graph, subgraph and local function of a model, as scopes.

ONNX names are not unique across a model: sibling If branches may each hold an initializer
``W``, a Constant's value tensor may have an empty name, a function body has names of its own.
So tensors are tracked by identity (the message object) together with their scope, and a node's
input is bound to the definition its own scope sees: its own graph first, then the enclosing
graphs (a function body sees nothing outside itself). Nothing here touches the file system.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

from olive_bf16_pass import lean_onnx as onnx

__all__ = [
    "ATTRIBUTE_FIELDS", "DEFAULT_DOMAINS", "Definition", "Scope", "Skeleton", "Use", "bind_uses", "constant_definition",
    "constant_value",
    "definitions", "iter_tensors", "names_in", "scopes", "settle_attributes",
]

DEFAULT_DOMAINS = ("", "ai.onnx")
_TENSOR, _TENSORS = onnx.AttributeProto.TENSOR, onnx.AttributeProto.TENSORS
_GRAPH, _GRAPHS = onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS
_SPARSE_TENSOR, _SPARSE_TENSORS = onnx.AttributeProto.SPARSE_TENSOR, onnx.AttributeProto.SPARSE_TENSORS


@dataclass(eq=False)
class Scope:
    """One graph or function body, with the scope whose names it can see (None: none)."""

    body: onnx.GraphProto | onnx.FunctionProto
    parent: Scope | None
    label: str  # "graph", "graph/If[2].then_branch", "function local.f", "function local.f/Loop[0].body"
    # tensors in its nodes' attributes (Constant values and the like), found by the walk that found
    # the scope; the edits add Casts, never tensors, so the list stays whole
    attribute_tensors: list[onnx.TensorProto] = field(default_factory=list)
    # sparse tensors: its sparse initializers and SPARSE_TENSOR(S) attributes; carried as they are
    sparse_tensors: list[onnx.SparseTensorProto] = field(default_factory=list)

    @property
    def is_function(self) -> bool:
        return isinstance(self.body, onnx.FunctionProto)

    @property
    def initializers(self):
        return () if self.is_function else self.body.initializer

    def ancestors(self) -> Iterator[Scope]:
        """This scope, then every enclosing one."""
        scope = self
        while scope is not None:
            yield scope
            scope = scope.parent


@dataclass(eq=False, slots=True)
class Use:
    """One node input reading a value."""

    scope: Scope
    node: onnx.NodeProto
    input_index: int


@dataclass(eq=False, slots=True)
class Definition:
    """A value that holds data: an initializer, or a Constant node's ``value``."""

    name: str
    tensor: onnx.TensorProto
    scope: Scope
    node: onnx.NodeProto | None = None  # the Constant node, for constants
    uses: list[Use] | None = None  # the node inputs that read it: bound by ``bind_uses`` when they are asked for
    size: int = field(kw_only=True)  # elements, counted once: upb builds the dims list on every read
    index: int = field(default=-1, kw_only=True)  # its place: among its scope's initializers, or the Constant node's

    @property
    def kind(self) -> str:
        return "initializer" if self.node is None else "constant"


@dataclass(eq=False)
class Skeleton:
    """A model (big tensors possibly still on disk) and its scopes, found once. Whatever replaces the
    model (an opset upgrade copies it) makes a new Skeleton, so the scopes are never stale."""

    model: onnx.ModelProto
    scopes: list[Scope]
    dropped: list[str] = field(default_factory=list)  # what settle_attributes cleared, for a warning

    @classmethod
    def of(cls, model: onnx.ModelProto, dropped: list[str] | None = None) -> Skeleton:
        return cls(model, scopes(model), list(dropped or ()))

    @classmethod
    def read(cls, model: onnx.ModelProto) -> Skeleton:
        """The skeleton of a model as it came: its attributes settled (``settle_attributes``) on the walk
        that finds its scopes, so every tensor left is one the walk finds."""
        dropped: list[str] = []
        return cls(model, scopes(model, dropped), dropped)


def scopes(model: onnx.ModelProto, settled: list[str] | None = None) -> list[Scope]:
    """The main graph, its subgraphs, then each local function and its subgraphs, parents first.

    Iterative: the nesting depth is the model author's, not ours to bound by Python's stack. An
    attribute is read by its declared type only (``settle_attributes`` has dropped the rest).
    ``settled``: settle each attribute on the way (one walk, not two), adding what is dropped to it.
    """
    if settled is not None:
        _settle_model(model, settled)
    found: list[Scope] = []
    roots = [(model.graph, "graph")]
    for function in model.functions:
        overload = f":{function.overload}" if function.overload else ""
        roots.append((function, f"function {function.domain}.{function.name}{overload}"))
    stack: list[tuple[onnx.GraphProto | onnx.FunctionProto, Scope | None, str]] = [
        (body, None, label) for body, label in reversed(roots)
    ]
    while stack:
        body, parent, label = stack.pop()
        scope = Scope(body, parent, label)
        found.append(scope)
        held, children = scope.attribute_tensors, []
        if not scope.is_function:
            scope.sparse_tensors.extend(body.sparse_initializer)
        for index, node in enumerate(body.node):
            attributes = node.attribute
            if not attributes:  # most nodes: the cheap test first
                continue
            for attr in attributes:
                if settled is not None:
                    _settle(node, attr, settled)
                kind = attr.type
                if kind == _TENSOR:
                    held.append(attr.t)
                elif kind == _TENSORS:
                    held.extend(attr.tensors)
                elif kind == _GRAPH:
                    children.append((attr.g, scope, f"{label}/{node.op_type}[{index}].{attr.name}"))
                elif kind == _GRAPHS:
                    children.extend(
                        (sub, scope, f"{label}/{node.op_type}[{index}].{attr.name}[{i}]")
                        for i, sub in enumerate(attr.graphs)
                    )
                elif kind == _SPARSE_TENSOR:
                    scope.sparse_tensors.append(attr.sparse_tensor)
                elif kind == _SPARSE_TENSORS:
                    scope.sparse_tensors.extend(attr.sparse_tensors)
        stack.extend(reversed(children))  # depth first, in the order the nodes hold them
    return found


# an attribute's type -> the one field that holds its value, of those that hold tensors or graphs
ATTRIBUTE_FIELDS = {
    _TENSOR: "t", _TENSORS: "tensors", _GRAPH: "g", _GRAPHS: "graphs",
    onnx.AttributeProto.SPARSE_TENSOR: "sparse_tensor", onnx.AttributeProto.SPARSE_TENSORS: "sparse_tensors",
}
_TYPE_OF_FIELD = {name: kind for kind, name in ATTRIBUTE_FIELDS.items()}
_REPEATED_FIELDS = frozenset({"tensors", "graphs", "sparse_tensors"})


def _holds(attr: onnx.AttributeProto, name: str) -> bool:
    return len(getattr(attr, name)) > 0 if name in _REPEATED_FIELDS else attr.HasField(name)


def settle_attributes(model: onnx.ModelProto) -> list[str]:
    """Make every tensor the model holds one that the walk above finds, or drop it as ONNX ignores it.

    An attribute's value is the field its type names: a tensor or graph in another field (a tensor
    in ``t`` of a FLOAT attribute) is never read by ONNX Runtime or onnx, so it is cleared; an
    attribute with no type (IR 1) gets the type of the one field it holds. ``training_info`` is not
    run for inference, and its tensors are not carried: it is cleared too. Returns one line per
    field dropped, for a warning. ``Skeleton.read`` does the same on its walk.
    """
    dropped: list[str] = []
    scopes(model, dropped)
    return dropped


def _settle_model(model: onnx.ModelProto, dropped: list[str]) -> None:
    if len(model.training_info):
        model.ClearField("training_info")
        dropped.append("the model's training_info (training graphs, which inference never runs) was dropped")


def _settle(node: onnx.NodeProto, attr: onnx.AttributeProto, dropped: list[str]) -> None:
    """One attribute of ``settle_attributes``: before its graphs are walked."""
    held = [name for name in _TYPE_OF_FIELD if _holds(attr, name)]
    if not held:
        return
    if attr.type == onnx.AttributeProto.UNDEFINED and len(held) == 1:
        attr.type = _TYPE_OF_FIELD[held[0]]
    used = ATTRIBUTE_FIELDS.get(attr.type)
    for name in held:
        if name != used:
            attr.ClearField(name)
            kind = onnx.AttributeProto.AttributeType.Name(attr.type) if attr.type else "without a type"
            dropped.append(
                f"attribute {attr.name!r} of {node.op_type} node {node.name!r} is {kind} but also holds "
                f"a {name} field, which ONNX never reads; dropped it"
            )


def constant_value(node: onnx.NodeProto) -> onnx.TensorProto | None:
    if node.op_type != "Constant" or node.domain not in DEFAULT_DOMAINS:
        return None
    for attr in node.attribute:
        if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
            return attr.t
    return None


def constant_definition(node: onnx.NodeProto) -> tuple[str, onnx.TensorProto] | None:
    """The name and value a Constant node defines; None when it defines no data (another op, no
    output name, no ``value`` tensor)."""
    if node.op_type != "Constant" or not node.output or not node.output[0]:
        return None
    value = constant_value(node)
    return None if value is None else (node.output[0], value)


def definitions(all_scopes: list[Scope]) -> list[Definition]:
    """Every initializer and Constant value, scope by scope in node order, their uses not bound
    (``bind_uses``). Selection makes only the definitions its rules leave, as this does."""
    found: list[Definition] = []
    add = found.append
    for scope in all_scopes:
        for place, tensor in enumerate(scope.initializers):
            add(Definition(tensor.name, tensor, scope, size=math.prod(tensor.dims), index=place))
        for index, node in enumerate(scope.body.node):
            defined = constant_definition(node)
            if defined is not None:
                name, value = defined
                add(Definition(name, value, scope, node, size=math.prod(value.dims), index=index))
    return found


def bind_uses(all_scopes: list[Scope], candidates: list[Definition]) -> None:
    """Give each of ``candidates`` (definitions of ``all_scopes``, made by ``definitions`` or as it makes
    them) the node inputs that really read it.

    One pass, parents before children and nodes in topological order, so a name is bound when
    it is read: to this scope's definition, or else to the nearest enclosing scope's. Every other
    definition shadows the names it defines, so a read is never bound past it.
    """
    mine: dict[tuple[int, bool, int], Definition] = {}  # (id(scope), constant?, index) -> the candidate
    for definition in candidates:
        definition.uses = []
        mine[(id(definition.scope), definition.node is not None, definition.index)] = definition
    declared: dict[int, set[str]] = {}  # id(scope) -> every name defined in it
    data_in: dict[int, dict[str, object]] = {}  # id(scope) -> its data definitions by name (or _SHADOW)
    parents = {id(scope.parent) for scope in all_scopes if scope.parent is not None}
    for scope in all_scopes:
        body, key = scope.body, id(scope)
        names = set(body.input) if scope.is_function else {v.name for v in body.input}
        data = {tensor.name: mine.get((key, False, place), _SHADOW) for place, tensor in enumerate(scope.initializers)}
        declared[key], data_in[key] = names, data
        names.update(data)
        # a scope's other names matter only where a name may come from outside (a subgraph) or be
        # looked up from inside (a scope with subgraphs); a plain graph reads its own data or nothing
        nested = scope.parent is not None or key in parents
        bound, seen = data.get, names.update
        for index, node in enumerate(body.node):
            for position, name in enumerate(node.input):
                definition = bound(name)
                if definition is None:
                    if not nested or not name or name in names:
                        continue  # no input, or a value of this scope that holds no data
                    owner = next((s for s in scope.ancestors() if name in declared[id(s)]), None)
                    definition = None if owner is None else data_in[id(owner)].get(name)
                    if definition is None:
                        continue
                if definition is not _SHADOW:
                    definition.uses.append(Use(scope, node, position))
            if nested:
                seen(node.output)
            defined = constant_definition(node)
            if defined is not None:
                name = defined[0]
                data[name] = mine.get((key, True, index), _SHADOW)
                names.add(name)


_SHADOW = object()  # a definition that is not a candidate: reads of its name are its, not an outer scope's


def names_in(scope: Scope) -> list[str]:
    """Every name a scope's graph holds: its values, nodes, op types, domains and attributes (repeats
    included); what must be text, and what a fresh name must avoid."""
    body = scope.body
    found = [t.name for t in scope.initializers]
    found.append(body.name)
    if scope.is_function:
        found += body.input
        found += body.output
    else:
        found += [v.name for v in (*body.input, *body.output, *body.value_info)]
    for node in body.node:
        found += node.input
        found += node.output
        found += (node.name, node.op_type, node.domain)
        if node.attribute:
            found += [attr.name for attr in node.attribute]
    return found


def iter_tensors(model: onnx.ModelProto, all_scopes: list[Scope] | None = None) -> Iterator[onnx.TensorProto]:
    """Every tensor that can hold data: initializers and node attribute tensors, in every scope."""
    for scope in all_scopes if all_scopes is not None else scopes(model):
        yield from scope.initializers
        yield from scope.attribute_tensors
