"""Member lists from tree-sitter symbol tables, for the member monitor.

:func:`symbol_members` answers "which names may follow this ``.``" for the receivers a
symbol table can list in full:

- JavaScript/TypeScript ``this.`` and ``super.`` in a class (its members and those of
  its base classes), ``ClassName.`` (statics), ``EnumName.`` and ``ns.`` for
  ``import * as ns from "./x"``;
- Python ``self.``, ``cls.`` and ``super().`` in a method, the fallback where jedi knows
  nothing about members defined in the enclosing class.

The contract is conservative: an answer is a list that holds every member the receiver
can have (it may hold more), and ``None`` ("unknown", no constraint) is returned
whenever that cannot be known: a base class that is not found, a dynamic class
(``__getattr__``, ``setattr``, ``Object.assign(this, ...)``, an index signature,
decorators that may add members), a receiver that is not one of the above. Members
assigned anywhere in the class (``this.x = ...``, ``self.x = ...``) count, and so do
those only read there, and those written as ``ClassName.x`` in the declaring file.

``this.``/``self.`` in a JavaScript or Python class that is extended somewhere (in this
file or the workspace, by a text search) is unknown too: a base class may call what only
its subclasses define. TypeScript requires such members to be declared.

The text may be mid-edit around the cursor (the model is writing there). The receiver
is read from the text before the dot; the tree is parsed from a repaired copy (the name
after the dot replaced by :data:`PLACEHOLDER`, then the rest of the line dropped, then
brackets and strings left open at the cursor closed), and a class is only used when its
own subtree parsed without error and no error after it suggests it was cut short.

Other files come as ``(path, text)`` pairs and are searched through the imports of the
file that names a class (relative imports only for JavaScript/TypeScript; Python
modules matched by path suffix). Their symbol tables are cached by content, so repeated
calls on unchanged files do not parse them again.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache, partial
from typing import NamedTuple, TypeAlias
from urllib.parse import unquote, urlparse

from tree_sitter import Node, Parser, Query, QueryCursor, Tree

from .syntax import get_language, grammar_name, make_parser


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


JS_OBJECT_MEMBERS = _words(
    "constructor hasOwnProperty isPrototypeOf propertyIsEnumerable toLocaleString toString valueOf"
)
"""Object.prototype members every JavaScript object has."""

JS_FUNCTION_MEMBERS = frozenset(
    {"prototype", "name", "length", "apply", "bind", "call", "toString"}
)
"""Members every class (a function) has besides its statics."""

PY_OBJECT_MEMBERS = _words(
    "__init__ __class__ __dict__ __doc__ __module__ __repr__ __str__ __eq__ __hash__ "
    "__getattribute__ __setattr__ __delattr__ __dir__ __format__ __init_subclass__ "
    "__new__ __reduce__ __reduce_ex__ __sizeof__ __subclasshook__ __ne__ __lt__ __le__ "
    "__gt__ __ge__ __getstate__ __weakref__ __annotations__ __firstlineno__ "
    "__static_attributes__"
) | frozenset(dir(object))
"""What an instance of a plain Python class has without declaring it."""

PY_TYPE_MEMBERS = frozenset(dir(type)) | {"__qualname__", "__name__", "__mro__", "__bases__"}
"""What a Python class object has besides its own members (for ``cls.``)."""

PY_DATACLASS_MEMBERS = frozenset({"__dataclass_fields__", "__dataclass_params__", "__match_args__"})

_GRAMMARS = ("python", "javascript", "typescript", "tsx")
_JS_EXTENSIONS = (".ts", ".tsx", ".d.ts", ".mts", ".cts", ".js", ".jsx", ".mjs", ".cjs")
_JS_CLASSES = ("class_declaration", "abstract_class_declaration", "class")
_JS_FUNCTIONS = (
    "function_declaration",
    "function_expression",
    "function",
    "generator_function",
    "generator_function_declaration",
)
_JS_MEMBERS = (
    "method_definition",
    "field_definition",
    "public_field_definition",
    "class_static_block",
)
_JS_RESERVED = _words(
    "break case catch class const continue debugger default delete do else export extends "
    "false finally for function if import in instanceof new null return switch throw true "
    "try typeof var void while with yield let static await enum implements interface "
    "package private protected public"
)
_PY_COMPOUND = _words(
    "if_statement elif_clause else_clause try_statement except_clause except_group_clause "
    "finally_clause with_statement for_statement while_statement block"
)
_PY_CLASS_DECORATORS = frozenset({"dataclass", "dataclasses.dataclass"})
_PAIRS = {"(": ")", "[": "]", "{": "}", "${": "}"}

PLACEHOLDER = "__pie_member__"
"""The member name written after the dot in the parsed copies (never in an answer)."""

_JS_THIS_MEMBER = re.compile(r"(?<![\w$.])this\s*\??\.\s*(#?[\w$]+)")
_JS_DYNAMIC_THIS = re.compile(
    r"(?:Object\s*\.\s*(?:assign|defineProperty|defineProperties)|Reflect\s*\.\s*"
    r"(?:set|defineProperty))\s*\(\s*this\b|(?<![\w$.])this\s*\[[^\n]*\]\s*=(?!=)"
)
_JS_COMMONJS = re.compile(r"(?<![\w$.])(?:module\s*\.\s*exports|exports\s*\.)")
_PY_DYNAMIC = re.compile(
    r"__getattr__|__getattribute__|__slots__|__dict__|(?<![\w.])setattr\s*\("
    r"|(?<![\w.])vars\s*\([^)]*\)\s*(?:\.\s*update|\[)"
)


class Receiver(NamedTuple):
    """What stands before the dot."""

    kind: str
    """``"this"`` (also Python's ``self``/``cls``), ``"super"`` or ``"name"``."""
    name: str
    """Its text: ``this``, ``self``, ``super``, ``Foo``."""
    start: int
    """Str offset where it starts."""
    dot: int
    """Str offset of the access operator (``.``, or ``?.`` in JavaScript)."""


@dataclass(frozen=True)
class ClassInfo:
    """One class declaration's own members (inherited ones come through :attr:`bases`)."""

    name: str
    """Its name, or ``""`` for an anonymous class."""
    instance: frozenset[str] | None
    """Members of an instance declared in the class; None when they cannot be listed."""
    static: frozenset[str] | None
    """JavaScript statics (Python: same as :attr:`instance`); None when unknown."""
    bases: tuple[str, ...] | None
    """Names of its base classes; None when a base is no plain name."""


class ImportRef(NamedTuple):
    """Where an imported name comes from."""

    source: str
    """The module as written: ``"./x"``, ``".models"``, ``"pkg.mod"``."""
    name: str
    """The name there; ``"*"`` for a namespace import, ``"default"`` for a default one."""


@dataclass(frozen=True)
class FileTable:
    """The module-level symbols of one file."""

    grammar: str
    text: str
    classes: Mapping[str, tuple[ClassInfo, ...]]
    """Local name -> the classes declared under it at module level."""
    enums: Mapping[str, frozenset[str] | None]
    """TypeScript enums: name -> members (None when merged from several declarations)."""
    imports: Mapping[str, ImportRef]
    """Local name -> its import."""
    stars: tuple[str, ...]
    """Modules re-exported with ``export *`` (JS) or imported with ``import *`` (Python)."""
    exported: Mapping[str, str]
    """JS exported name -> local name (``export {a as b}``, ``export default X``)."""
    reexports: Mapping[str, ImportRef]
    """JS exported name -> its origin (``export {a as b} from "./z"``)."""
    exports: frozenset[str] | None
    """JS exported names (None: CommonJS, ``export =``, a declaration not understood)."""
    merged: frozenset[str]
    """TS names that also name an interface or a namespace (declaration merging)."""


class _Loc(NamedTuple):
    path: str | None
    table: FileTable


class _Decl(NamedTuple):
    loc: _Loc
    cls: ClassInfo | None
    """The class, or None for an enum."""
    enum: frozenset[str] | None


class _Accesses(NamedTuple):
    static: frozenset[str]
    instance: frozenset[str]


class _Retry:
    """A verdict from a tree too broken near the cursor to trust."""


_RETRY = _Retry()
_Verdict: TypeAlias = frozenset[str] | _Retry | None


def symbol_members(
    language_id: str,
    text: str,
    offset: int,
    workspace: Sequence[tuple[str, str]] = (),
    *,
    path: str | None = None,
) -> frozenset[str] | None:
    """Members a tree-sitter symbol table knows for the receiver of the ``.`` before ``offset``.

    ``offset`` is a str offset into ``text``, just after the dot. ``workspace``: other
    files as ``(path, text)`` (open documents and workspace files), searched for class
    declarations through imports. ``path``: this document's path (or ``file://`` URI),
    which relative imports are resolved against; without it they are matched by path
    suffix, and only a unique match counts. None when unknown.
    """
    grammar = grammar_name(language_id)
    if grammar not in _GRAMMARS or not 0 < offset <= len(text):
        return None
    rec = receiver(text, offset, python=grammar == "python")
    parser = make_parser(grammar) if rec is not None else None
    if rec is None or parser is None:
        return None
    current = _norm_path(path) if path else None
    files = {p: t for p, t in ((_norm_path(p), t) for p, t in workspace) if p != current}
    for src, tree in _candidates(parser, grammar, text, rec, offset):
        ctx = _Ctx(grammar, files, current, src, tree)
        verdict = _answer(ctx, rec, text)
        if not isinstance(verdict, _Retry):
            return verdict - {PLACEHOLDER} if verdict is not None else None
    return None


def receiver(text: str, offset: int, *, python: bool) -> Receiver | None:
    """The receiver of the ``.`` at ``offset - 1``, read backwards from the dot.

    ``this``/``super``/a name in JavaScript, ``self``/``cls``/``super()`` in Python; None
    for anything else (a call, a subscript, a chain, a number, a keyword).
    """
    if not 0 < offset <= len(text) or text[offset - 1] != ".":
        return None
    dot = offset - 1
    if not python and text[dot - 1 : dot] == "?":
        dot -= 1
    if python and text[:dot].endswith("super()"):
        start, name = dot - 7, "super"
        kind: str | None = "super"
    else:
        start = dot
        while start > 0 and _name_char(text[start - 1]):
            start -= 1
        name = text[start:dot]
        kind = _receiver_kind(name, python)
    before = text[:start]
    if kind is None or before.endswith("#") or _name_char(before[-1:]):
        return None
    if before.rstrip().endswith(".") and not before.endswith("..."):
        return None  # a chain: a.b. or a?.b. (not a spread: ...this.)
    return Receiver(kind, name, start, dot)


def _receiver_kind(name: str, python: bool) -> str | None:
    if python:
        return "this" if name in ("self", "cls") else None
    if name in ("this", "super"):
        return name
    if not name or name[0].isdigit() or name in _JS_RESERVED:
        return None
    return "name"


def _name_char(c: str) -> bool:
    return len(c) == 1 and (c.isalnum() or c in "_$")


# --- parsing the mid-edit text -----------------------------------------------------------


def _candidates(
    parser: Parser, grammar: str, text: str, rec: Receiver, offset: int
) -> Iterator[tuple[str, Tree]]:
    """Repaired copies of ``text`` and their trees, least changed first.

    Each names the member :data:`PLACEHOLDER` (replacing the name after the dot, then the
    rest of the line); when that leaves brackets or strings open at the cursor that the
    rest of the file does not close, a further copy closes them (and ends the statement).
    """
    head = text[: rec.dot] + text[rec.dot : offset] + PLACEHOLDER
    cut = _nbytes(head)
    name_end = offset
    while name_end < len(text) and _name_char(text[name_end]):
        name_end += 1
    line_end = name_end
    while line_end < len(text) and text[line_end] not in "\r\n":
        line_end += 1
    fillers = ("", ": pass") if grammar == "python" else ("", ";")
    seen: set[str] = set()
    for rest in (text[name_end:], text[line_end:]):
        base = head + rest
        if base in seen:
            continue
        seen.add(base)
        tree = parser.parse(base.encode("utf-8", "surrogatepass"))
        yield base, tree
        after = parser.parse(rest.encode("utf-8", "surrogatepass"))
        closers = _closers(_open_at(tree, cut, grammar), _unclosed(after, grammar))
        for filler in fillers:
            src = head + closers + filler + rest
            if src not in seen:
                seen.add(src)
                yield src, parser.parse(src.encode("utf-8", "surrogatepass"))


@cache
def _token_query(grammar: str) -> Query | None:
    """Brackets, and the tokens that open and close strings with code inside."""
    language = get_language(grammar)
    if language is None:
        return None
    brackets = '"(" ")" "[" "]" "{" "}"'
    if grammar == "python":
        return Query(language, f"[{brackets} (string_start) (string_end)] @t")
    return Query(language, f'[{brackets} "${{" "`"] @t')


def _tokens(tree: Tree, grammar: str) -> list[Node]:
    query = _token_query(grammar)
    if query is None:
        return []
    found = QueryCursor(query).captures(tree.root_node).get("t", [])
    return sorted((n for n in found if not n.is_missing), key=lambda n: n.start_byte)


def _open_at(tree: Tree, cut: int, grammar: str) -> list[str]:
    """What closes each bracket and string open at byte ``cut``, outermost first."""
    stack: list[str] = []
    for token in _tokens(tree, grammar):
        if token.start_byte >= cut:
            break
        kind = token.type
        if kind in _PAIRS:
            stack.append(_PAIRS[kind])
        elif kind == "string_start":
            stack.append(_text(token).lstrip("rRbBuUfFtT"))
        elif kind == "`" and stack[-1:] != ["`"]:
            stack.append("`")
        elif stack and (stack[-1] == kind or kind == "string_end"):
            stack.pop()
    return stack


def _unclosed(tree: Tree, grammar: str) -> int:
    """How many closing brackets in a parsed text close brackets opened before it."""
    depth = unmatched = 0
    for token in _tokens(tree, grammar):
        if token.type in _PAIRS:
            depth += 1
        elif token.type in (")", "]", "}"):
            if depth:
                depth -= 1
            else:
                unmatched += 1
    return unmatched


def _closers(open_at: list[str], closed_after: int) -> str:
    """What closes the innermost brackets and strings that the rest does not close."""
    extra = len(open_at) - closed_after
    return "".join(reversed(open_at[-extra:])) if extra > 0 else ""


def _nbytes(s: str) -> int:
    return len(s.encode("utf-8", "surrogatepass"))


def _text(node: Node | None) -> str:
    if node is None or node.text is None:
        return ""
    return node.text.decode("utf-8", "surrogatepass")


# --- the answer for one candidate tree ---------------------------------------------------


@dataclass
class _Ctx:
    """One candidate: the current file's tree and table, and the workspace."""

    grammar: str
    files: Mapping[str, str]
    path: str | None
    src: str
    tree: Tree
    _table: FileTable | None = field(default=None, init=False)

    @property
    def python(self) -> bool:
        """Whether the current file is Python."""
        return self.grammar == "python"

    @property
    def current(self) -> _Loc:
        """The current file's symbols (built once per candidate)."""
        if self._table is None:
            self._table = _build_table(self.grammar, self.tree.root_node, self.src, lazy=True)
        return _Loc(self.path, self._table)

    def load(self, loc: _Loc, source: str) -> _Loc | None:
        """The file a module name in ``loc`` refers to, when it is in the workspace."""
        if self.python:
            found = _resolve_python(self.files, loc.path, source)
        else:
            found = _resolve_js(self.files, loc.path, source)
        grammar = _grammar_for(found) if found is not None else None
        if found is None or grammar is None:
            return None
        return _Loc(found, _file_table(grammar, self.files[found]))


def _answer(ctx: _Ctx, rec: Receiver, text: str) -> _Verdict:
    end = _nbytes(text[: rec.dot])
    start = end - _nbytes(text[rec.start : rec.dot])
    node = ctx.tree.root_node.descendant_for_byte_range(start, end)
    expected: tuple[str, ...] = (rec.kind,)
    if ctx.python:
        expected = ("call",) if rec.kind == "super" else ("identifier",)
    elif rec.kind == "name":
        expected = ("identifier", "type_identifier")
    if (
        node is None
        or (node.start_byte, node.end_byte) != (start, end)
        or node.type not in expected
    ):
        return _RETRY if ctx.tree.root_node.has_error else None
    if ctx.python:
        return _python_self(ctx, node, rec)
    if rec.kind == "name":
        return _js_named(ctx, node, rec.name)
    return _js_this(ctx, node, rec.kind == "super")


def _js_this(ctx: _Ctx, node: Node, is_super: bool) -> _Verdict:
    """``this.``/``super.`` in a class member."""
    decisive, cls, static = _js_this_scope(node)
    if cls is None:
        return _RETRY if decisive.has_error else None
    if cls.has_error or _cut_short(cls):
        return _RETRY
    info = _js_class_info(cls, _js_class_name(cls), ctx.grammar)
    if not is_super and _subclassed(ctx, info.name):
        return None
    if is_super:
        members = _bases_members(ctx, ctx.current, info, static, frozenset())
    else:
        members = _class_members(ctx, ctx.current, info, static, frozenset())
    if members is None:
        return None
    return members | JS_OBJECT_MEMBERS | (JS_FUNCTION_MEMBERS if static else frozenset())


def _subclassed(ctx: _Ctx, name: str) -> bool:
    """Whether a class named ``name`` may be extended, in this file or the workspace.

    ``this.x``/``self.x`` in a base class may name a member that only its subclasses
    define (a template method): JavaScript and Python allow it, TypeScript does not.
    """
    if not name or ctx.grammar in ("typescript", "tsx"):
        return False
    family = ("python",) if ctx.python else ("javascript", "typescript", "tsx")
    others = (text for path, text in ctx.files.items() if _grammar_for(path) in family)
    return any(_extends(text, name, ctx.python) for text in (ctx.src, *others))


@lru_cache(maxsize=4096)
def _extends(text: str, name: str, python: bool) -> bool:
    """Whether a class header in ``text`` may name ``name`` as a base (text search)."""
    quoted = re.escape(name)
    if python:
        pattern = rf"\bclass\s+\w+\s*\([^)]*(?<!\w){quoted}\b"
    else:
        pattern = rf"\bextends\b[^{{;]*?(?<![\w$]){quoted}(?![\w$])"
    return re.search(pattern, text) is not None


def _cut_short(cls: Node) -> bool:
    """Whether error recovery may have ended the class early.

    So it may when the class lies in an ``ERROR`` node, when a parse error follows it in
    a node around it, or (Python) when a statement after it in a block around it is not
    indented as the statement that holds the class: tree-sitter reads a stray dedent and
    indent back without an error.
    """
    node = cls
    while node.parent is not None:
        parent = node.parent
        if parent.is_error:
            return True
        later = [c for c in parent.named_children if c.start_byte >= cls.end_byte]
        if parent.has_error and any(c.has_error for c in later):
            return True
        if parent.type in ("module", "block") and _misindented(node, later):
            return True
        node = parent
    return False


def _misindented(node: Node, later: list[Node]) -> bool:
    """Whether a statement that starts a line after ``node`` is indented otherwise."""
    row = node.end_point.row
    for statement in later:
        starts_line = statement.start_point.row > row and statement.type != "comment"
        if starts_line and statement.start_point.column != node.start_point.column:
            return True
        row = statement.end_point.row
    return False


def _js_this_scope(node: Node) -> tuple[Node, Node | None, bool]:
    """(the node that decides, the class of ``this``, whether ``this`` is the class itself).

    ``this`` is the class itself in a static member, an instance in any other member.
    """
    child, parent = node, node.parent
    while parent is not None:
        kind = parent.type
        if kind in _JS_FUNCTIONS or kind == "class_body" or kind in _JS_CLASSES:
            return parent, None, False
        if kind in _JS_MEMBERS:
            body = parent.parent
            if body is None or body.type != "class_body" or body.parent is None:
                return parent, None, False
            if child.type in ("computed_property_name", "decorator"):
                return parent, None, False
            return parent, body.parent, _has_child(parent, "static")
        child, parent = parent, parent.parent
    return child, None, False


def _js_named(ctx: _Ctx, node: Node, name: str) -> _Verdict:
    """``ClassName.``, ``EnumName.``, ``ns.``."""
    if _js_shadowed(node, name):
        return None
    loc = ctx.current
    ref = loc.table.imports.get(name)
    if ref is not None and ref.name == "*":
        return _namespace_members(ctx, loc, ref.source, frozenset())
    decls = _find(ctx, loc, name, exported=False, seen=frozenset())
    if not decls:
        return None
    out: set[str] = set(JS_OBJECT_MEMBERS)
    if all(d.cls is None for d in decls):
        for d in decls:
            if d.enum is None:
                return None
            out |= d.enum
        return frozenset(out)
    out |= JS_FUNCTION_MEMBERS
    for d in decls:
        members = _class_members(ctx, d.loc, d.cls, True, frozenset()) if d.cls else None
        if members is None:
            return None
        out |= members
    return frozenset(out)


def _python_self(ctx: _Ctx, node: Node, rec: Receiver) -> _Verdict:
    """``self.``, ``cls.``, ``super().`` in a method."""
    decisive, cls, method = _python_method_scope(node, rec)
    if cls is None or method is None:
        return _RETRY if decisive.has_error else None
    if cls.has_error or _cut_short(cls):
        return _RETRY
    if rec.kind != "super" and re.search(rf"(?<![\w.]){rec.name}\s*:?=(?!=)", _text(method)):
        return None  # the receiver is rebound
    info = _python_class_info(cls)
    if rec.kind != "super" and _subclassed(ctx, info.name):
        return None
    if rec.kind == "super":
        members = _bases_members(ctx, ctx.current, info, False, frozenset())
    else:
        members = _class_members(ctx, ctx.current, info, False, frozenset())
    if members is None:
        return None
    out = members | PY_OBJECT_MEMBERS
    if rec.name == "cls" or "classmethod" in _python_decorators(method):
        out |= PY_TYPE_MEMBERS
    return out


def _python_method_scope(node: Node, rec: Receiver) -> tuple[Node, Node | None, Node | None]:
    """(the node that decides, the class, the method the receiver is the first parameter of).

    For ``super()`` the innermost function must be the method itself.
    """
    last, parent = node, node.parent
    while parent is not None:
        kind = parent.type
        if kind == "class_definition":
            return parent, None, None
        if kind in ("lambda", "function_definition"):
            owner = _python_owner_class(parent) if kind == "function_definition" else None
            params = _python_params(parent)
            if owner is not None:
                first_ok = rec.kind == "super" or (params[:1] == [rec.name])
                if not first_ok or "staticmethod" in _python_decorators(parent):
                    return parent, None, None
                return parent, owner, parent
            if rec.kind == "super" or rec.name in params:
                return parent, None, None
        last, parent = parent, parent.parent
    return last, None, None


# --- members of classes ------------------------------------------------------------------


def _class_members(
    ctx: _Ctx,
    loc: _Loc,
    info: ClassInfo,
    static: bool,
    seen: frozenset[tuple[str | None, ClassInfo]],
) -> frozenset[str] | None:
    """The members of ``info`` (declared in ``loc``) and of its bases, or None."""
    if (loc.path, info) in seen or info.name in loc.table.merged:
        return None
    own = info.static if static else info.instance
    accesses = _name_accesses(loc.table.text, info.name, ctx.python) if info.name else None
    if own is None or (info.name and accesses is None):
        return None
    inherited = _bases_members(ctx, loc, info, static, seen | {(loc.path, info)})
    if inherited is None:
        return None
    extra: frozenset[str] = frozenset()
    if accesses is not None:
        extra = accesses.static if static or ctx.python else accesses.instance
    return own | extra | inherited


def _bases_members(
    ctx: _Ctx,
    loc: _Loc,
    info: ClassInfo,
    static: bool,
    seen: frozenset[tuple[str | None, ClassInfo]],
) -> frozenset[str] | None:
    """The members ``info`` inherits (Python's ``object`` adds nothing here), or None."""
    if info.bases is None:
        return None
    out: set[str] = set()
    for base in info.bases:
        if ctx.python and base == "object":
            continue
        decls = _find(ctx, loc, base, exported=False, seen=frozenset())
        if not decls:
            return None
        for decl in decls:
            members = _class_members(ctx, decl.loc, decl.cls, static, seen) if decl.cls else None
            if members is None:
                return None
            out |= members
    return frozenset(out)


@lru_cache(maxsize=1024)
def _name_accesses(text: str, name: str, python: bool) -> _Accesses | None:
    """Members written ``Name.x`` in ``text`` (``Name.prototype.x``: instance members).

    None when members are added dynamically (``setattr(Name``, ``Object.assign(Name``).
    """
    quoted = re.escape(name)
    if python:
        if re.search(rf"(?<![\w.])setattr\s*\(\s*{quoted}\b", text):
            return None
        found = re.findall(rf"(?<![\w.]){quoted}\s*\.\s*([^\W\d]\w*)", text)
        return _Accesses(frozenset(found), frozenset(found))
    dynamic = rf"(?:Object\s*\.\s*(?:assign|defineProperty|defineProperties))\s*\(\s*{quoted}\b"
    if re.search(dynamic, text):
        return None
    static = re.findall(rf"(?<![\w$.]){quoted}\s*\.\s*([\w$]+)", text)
    instance = re.findall(rf"(?<![\w$.]){quoted}\s*\.\s*prototype\s*\.\s*([\w$]+)", text)
    return _Accesses(frozenset(static), frozenset(instance))


def _find(
    ctx: _Ctx, loc: _Loc, name: str, *, exported: bool, seen: frozenset[tuple[str | None, str]]
) -> list[_Decl] | None:
    """The classes and enums ``name`` denotes in ``loc``, following imports and re-exports.

    ``name`` is an exported name when ``exported``, a local one otherwise. None when an
    import cannot be followed or a cycle is met.
    """
    if (loc.path, name) in seen:
        return None
    seen = seen | {(loc.path, name)}
    table = loc.table
    local = table.exported.get(name, name) if exported else name
    found = [_Decl(loc, info, None) for info in table.classes.get(local, ())]
    if local in table.enums:
        found.append(_Decl(loc, None, table.enums[local]))
    refs = [
        r for r in (table.imports.get(local), table.reexports.get(name) if exported else None) if r
    ]
    if not found and not refs and (exported or ctx.python):
        refs = [ImportRef(source, name) for source in table.stars]
    for ref in refs:
        target = ctx.load(loc, ref.source)
        more = _find(ctx, target, ref.name, exported=True, seen=seen) if target else None
        if more is None:
            return None
        found += more
    return found


def _namespace_members(
    ctx: _Ctx, loc: _Loc, source: str, seen: frozenset[str | None]
) -> frozenset[str] | None:
    """The names a module exports (``export *`` followed), or None."""
    target = ctx.load(loc, source)
    if target is None or target.table.exports is None:
        return None
    if target.path in seen:
        return frozenset()
    out = set(target.table.exports)
    for star in target.table.stars:
        more = _namespace_members(ctx, target, star, seen | {target.path})
        if more is None:
            return None
        out |= more - {"default"}
    return frozenset(out)


# --- module resolution -------------------------------------------------------------------


def _norm_path(path: str) -> str:
    if path.startswith("file://"):
        path = unquote(urlparse(path).path)
    return posixpath.normpath(path.replace("\\", "/"))


def _grammar_for(path: str) -> str | None:
    if path.endswith((".py", ".pyi")):
        return "python"
    if path.endswith(".tsx"):
        return "tsx"
    if path.endswith((".ts", ".mts", ".cts")):
        return "typescript"
    if path.endswith((".js", ".jsx", ".mjs", ".cjs")):
        return "javascript"
    return None


def _match(files: Mapping[str, str], candidates: Sequence[str], anchored: bool) -> str | None:
    """The workspace path a list of candidates (most preferred first) names.

    ``anchored``: the first candidate that is a workspace path. Otherwise the one
    workspace path that ends with a candidate; None when none, or several, match.
    """
    for candidate in candidates:
        if anchored:
            if candidate in files:
                return candidate
            continue
        hits = [p for p in files if p == candidate or p.endswith("/" + candidate)]
        if hits:
            return hits[0] if len(hits) == 1 else None
    return None


def _resolve_js(files: Mapping[str, str], importer: str | None, source: str) -> str | None:
    """The workspace file a relative JavaScript/TypeScript module specifier names."""
    if not source.startswith("."):
        return None  # a package, or a path alias we cannot resolve
    stems = [source] + [
        source[: -len(e)] for e in (".js", ".jsx", ".mjs", ".cjs") if source.endswith(e)
    ]
    tails = [""] + list(_JS_EXTENSIONS) + [f"/index{e}" for e in _JS_EXTENSIONS]
    if importer is not None:
        base = posixpath.dirname(importer)
        candidates = [posixpath.normpath(posixpath.join(base, s)) + t for s in stems for t in tails]
        return _match(files, [c for c in candidates if _grammar_for(c)], anchored=True)
    stems = [_strip_parents(posixpath.normpath(s)) for s in stems]
    if any(s in (".", "..", "") for s in stems):
        return None
    return _match(
        files, [s + t for s in stems for t in tails if _grammar_for(s + t)], anchored=False
    )


def _strip_parents(path: str) -> str:
    while path.startswith("../"):
        path = path[3:]
    return path


def _resolve_python(files: Mapping[str, str], importer: str | None, module: str) -> str | None:
    """The workspace file a Python module name (``pkg.mod``, ``.mod``, ``..``) names."""
    level = len(module) - len(module.lstrip("."))
    rel = "/".join(p for p in module[level:].split(".") if p)
    tails = [f"{rel}.py", f"{rel}.pyi", f"{rel}/__init__.py"] if rel else ["__init__.py"]
    if level and importer is not None:
        base = posixpath.dirname(importer)
        for _ in range(level - 1):
            base = posixpath.dirname(base)
        return _match(files, [posixpath.join(base, t) for t in tails], anchored=True)
    return _match(files, tails, anchored=False) if rel else None


# --- symbol tables -----------------------------------------------------------------------


@lru_cache(maxsize=256)
def _file_table(grammar: str, text: str) -> FileTable:
    """The symbol table of a workspace file, cached by content."""
    parser = make_parser(grammar)
    if parser is None:
        return _TableBuilder(grammar, text).freeze()
    tree = parser.parse(text.encode("utf-8", "surrogatepass"))
    return _build_table(grammar, tree.root_node, text)


def _build_table(grammar: str, root: Node, text: str, *, lazy: bool = False) -> FileTable:
    """The symbol table of a parsed file; ``lazy``: classes are read when first looked up."""
    builder = _TableBuilder(grammar, text)
    if grammar == "python":
        builder.python_module(root)
    else:
        for node in root.named_children:
            builder.js_statement(node, exported=False)
        if _JS_COMMONJS.search(text):
            builder.exports = None
    return builder.freeze(lazy)


@dataclass
class _TableBuilder:
    """Collects a :class:`FileTable` from the statements at a module's top level."""

    grammar: str
    text: str
    classes: dict[str, list[Callable[[], ClassInfo]]] = field(default_factory=dict)
    enums: dict[str, frozenset[str] | None] = field(default_factory=dict)
    imports: dict[str, ImportRef] = field(default_factory=dict)
    stars: list[str] = field(default_factory=list)
    exported: dict[str, str] = field(default_factory=dict)
    reexports: dict[str, ImportRef] = field(default_factory=dict)
    exports: set[str] | None = field(default_factory=set)
    merged: set[str] = field(default_factory=set)

    def freeze(self, lazy: bool = False) -> FileTable:
        """The table collected so far (``lazy``: classes read when first looked up)."""
        classes: Mapping[str, tuple[ClassInfo, ...]] = _LazyClasses(self.classes)
        if not lazy:
            classes = {
                name: tuple(read() for read in reads) for name, reads in self.classes.items()
            }
        return FileTable(
            self.grammar,
            self.text,
            classes,
            dict(self.enums),
            dict(self.imports),
            tuple(self.stars),
            dict(self.exported),
            dict(self.reexports),
            frozenset(self.exports) if self.exports is not None else None,
            frozenset(self.merged),
        )

    def add_class(self, name: str, node: Node, class_name: str | None = None) -> None:
        """Record a class under a local name (its own name: ``class_name``, else ``name``)."""
        if self.grammar == "python":
            read = partial(_python_class_info, node)
        else:
            read = partial(_js_class_info, node, class_name or name, self.grammar)
        self.classes.setdefault(name, []).append(read)

    def export(self, *names: str) -> None:
        """Record exported names."""
        if self.exports is not None:
            self.exports.update(names)

    # JavaScript / TypeScript

    def js_statement(self, node: Node, exported: bool) -> None:
        """Record what a top-level statement declares."""
        kind = node.type
        name = _text(node.child_by_field_name("name"))
        if kind == "export_statement":
            self.js_export(node)
        elif kind == "import_statement":
            self.js_import(node)
        elif kind == "ambient_declaration":
            for child in node.named_children:
                self.js_statement(child, exported)
        elif kind == "expression_statement":
            for child in node.named_children:
                if child.type in ("internal_module", "module"):
                    self.js_statement(child, exported)
        elif kind in _JS_CLASSES and name:
            self.add_class(name, node)
        elif kind == "enum_declaration" and name:
            self.enums[name] = None if name in self.enums else _js_enum_members(node)
        elif kind in ("lexical_declaration", "variable_declaration"):
            self.js_variables(node, exported)
            return
        elif kind in ("interface_declaration", "internal_module", "module"):
            self.merged.add(name)
        elif not name and exported:
            self.exports = None
        if exported and name:
            self.export(name)

    def js_variables(self, node: Node, exported: bool) -> None:
        """Record ``const A = class {...}`` and exported variable names."""
        for declarator in node.named_children:
            if declarator.type != "variable_declarator":
                continue
            names = _js_pattern_names(declarator.child_by_field_name("name"))
            value = declarator.child_by_field_name("value")
            if value is not None and value.type == "class" and len(names) == 1:
                name = next(iter(names))
                self.add_class(name, value)
            if exported:
                self.export(*names)

    def js_export(self, node: Node) -> None:
        """Record an ``export`` statement."""
        source_node = node.child_by_field_name("source")
        source = _text(source_node)[1:-1] if source_node is not None else None
        declaration = node.child_by_field_name("declaration")
        value = node.child_by_field_name("value")
        if _has_child(node, "default"):
            self.export("default")
            target = declaration or value
            if target is not None and target.type in _JS_CLASSES:
                name = _text(target.child_by_field_name("name")) or "default"
                self.add_class("default", target, name)
            elif target is not None and target.type == "identifier":
                self.exported["default"] = _text(target)
        if declaration is not None:
            self.js_statement(declaration, exported=True)
        for child in node.named_children:
            if child.type == "export_clause":
                self.js_export_clause(child, source)
            elif child.type == "namespace_export":
                self.export(*(_text(c) for c in child.named_children))
        if _has_child(node, "*") and source and not _has_child(node, "namespace_export"):
            self.stars.append(source)
        if _has_child(node, "="):
            self.exports = None

    def js_export_clause(self, clause: Node, source: str | None) -> None:
        """Record ``export {a, b as c}`` (``from source``)."""
        for spec in clause.named_children:
            if spec.type != "export_specifier":
                continue
            name = _text(spec.child_by_field_name("name"))
            alias = _text(spec.child_by_field_name("alias")) or name
            self.export(alias)
            if source is not None:
                self.reexports[alias] = ImportRef(source, name)
            else:
                self.exported[alias] = name

    def js_import(self, node: Node) -> None:
        """Record an ``import`` statement's bindings."""
        source = _text(node.child_by_field_name("source"))[1:-1]
        for clause in node.named_children:
            if clause.type != "import_clause":
                continue
            for child in clause.named_children:
                if child.type == "identifier":
                    self.imports[_text(child)] = ImportRef(source, "default")
                elif child.type == "namespace_import":
                    for ident in child.named_children:
                        self.imports[_text(ident)] = ImportRef(source, "*")
                elif child.type == "named_imports":
                    for spec in child.named_children:
                        name = _text(spec.child_by_field_name("name"))
                        alias = _text(spec.child_by_field_name("alias")) or name
                        if spec.type == "import_specifier" and name:
                            self.imports[alias] = ImportRef(source, name)

    # Python

    def python_module(self, root: Node) -> None:
        """Record a module's classes and ``from ... import`` bindings (not in functions)."""
        stack = list(root.named_children)
        while stack:
            node = stack.pop()
            if node.type == "decorated_definition":
                definition = node.child_by_field_name("definition")
                stack.extend([definition] if definition is not None else [])
            elif node.type == "class_definition":
                self.add_class(_text(node.child_by_field_name("name")), node)
            elif node.type == "import_from_statement":
                self.python_import(node)
            elif node.type in _PY_COMPOUND:
                stack.extend(node.named_children)

    def python_import(self, node: Node) -> None:
        """Record ``from module import a, b as c`` (and ``*``)."""
        module = _text(node.child_by_field_name("module_name"))
        if any(child.type == "wildcard_import" for child in node.named_children):
            self.stars.append(module)
        for child in node.children_by_field_name("name"):
            if child.type == "aliased_import":
                name = _text(child.child_by_field_name("name"))
                self.imports[_text(child.child_by_field_name("alias"))] = ImportRef(module, name)
            else:
                self.imports[_text(child)] = ImportRef(module, _text(child))


class _LazyClasses(Mapping[str, tuple[ClassInfo, ...]]):
    """Classes read on first lookup (the current file's: most are never looked up)."""

    def __init__(self, reads: Mapping[str, list[Callable[[], ClassInfo]]]) -> None:
        self._reads = reads
        self._read: dict[str, tuple[ClassInfo, ...]] = {}

    def __getitem__(self, name: str) -> tuple[ClassInfo, ...]:
        if name not in self._read:
            self._read[name] = tuple(read() for read in self._reads[name])
        return self._read[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._reads)

    def __len__(self) -> int:
        return len(self._reads)


def _has_child(node: Node, kind: str) -> bool:
    return any(child.type == kind for child in node.children)


# --- JavaScript / TypeScript classes -----------------------------------------------------


def _js_class_name(node: Node) -> str:
    """A class's name, or the variable an anonymous class expression is assigned to."""
    name = _text(node.child_by_field_name("name"))
    parent = node.parent
    if not name and parent is not None and parent.type == "variable_declarator":
        name = _text(parent.child_by_field_name("name"))
    return name


def _js_class_info(node: Node, name: str, grammar: str) -> ClassInfo:
    """The members a class body declares: instance side and static side."""
    bases = _js_bases(node)
    body = node.child_by_field_name("body")
    if body is None or node.has_error or (grammar == "javascript" and _js_decorated(node)):
        return ClassInfo(name, None, None, bases)
    sides: dict[bool, set[str] | None] = {False: set(), True: set()}
    for member in body.named_children:
        if member.type == "comment":
            continue
        static = member.type == "class_static_block" or _has_child(member, "static")
        names = _js_member_names(member)
        source = _text(member)
        side = sides[static]
        if names is None or _JS_DYNAMIC_THIS.search(source):
            sides[static] = None
        elif side is not None:
            side |= names
            side.update(_JS_THIS_MEMBER.findall(source))
    instance, static_side = sides[False], sides[True]
    return ClassInfo(
        name,
        frozenset(instance) if instance is not None else None,
        frozenset(static_side) if static_side is not None else None,
        bases,
    )


def _js_member_names(member: Node) -> frozenset[str] | None:
    """The names one class-body member declares.

    None when they cannot be known (an index signature, a computed name, anything not
    understood).
    """
    kind = member.type
    if kind in ("class_static_block", "decorator"):
        return frozenset()
    if kind in ("method_definition", "method_signature", "abstract_method_signature"):
        key = _js_key(member.child_by_field_name("name"))
        if key == "constructor" and kind == "method_definition":
            return _js_parameter_properties(member)
    elif kind in ("field_definition", "public_field_definition"):
        key = _js_key(member.child_by_field_name("property") or member.child_by_field_name("name"))
    else:
        return None
    if key is None:
        return None
    return frozenset({key} - {""})


def _js_key(node: Node | None) -> str | None:
    """A member's name.

    ``""`` when no ``.name`` can reach it (a number, a symbol), None when it cannot be
    known (a computed name).
    """
    if node is None:
        return None
    kind = node.type
    if kind in ("property_identifier", "private_property_identifier", "identifier"):
        return _text(node)
    if kind == "string":
        return _text(node)[1:-1]
    if kind == "number":
        return ""
    if kind == "computed_property_name" and node.named_child_count == 1:
        inner = node.named_children[0]
        if inner.type == "string":
            return _text(inner)[1:-1]
        if (
            inner.type == "member_expression"
            and _text(inner.child_by_field_name("object")) == "Symbol"
        ):
            return ""
    return None


def _js_parameter_properties(constructor: Node) -> frozenset[str]:
    """TypeScript parameter properties: ``constructor(private a: A, readonly b)``."""
    params = constructor.child_by_field_name("parameters")
    names: set[str] = set()
    modifiers = ("accessibility_modifier", "readonly", "override_modifier")
    for param in params.named_children if params is not None else []:
        if any(child.type in modifiers for child in param.children):
            pattern = param.child_by_field_name("pattern")
            if pattern is not None and pattern.type == "identifier":
                names.add(_text(pattern))
    return frozenset(names)


def _js_bases(node: Node) -> tuple[str, ...] | None:
    """The name after ``extends``: ``()`` without one, None when it is no plain name."""
    for heritage in node.named_children:
        if heritage.type != "class_heritage":
            continue
        for clause in heritage.named_children:
            if clause.type == "implements_clause":
                continue
            value = (
                clause.child_by_field_name("value") if clause.type == "extends_clause" else clause
            )
            return (_text(value),) if value is not None and value.type == "identifier" else None
    return ()


def _js_decorated(node: Node) -> bool:
    parent = node.parent
    outer = (
        parent is not None and parent.type == "export_statement" and _has_child(parent, "decorator")
    )
    return outer or _has_child(node, "decorator")


def _js_enum_members(node: Node) -> frozenset[str] | None:
    body = node.child_by_field_name("body")
    names: set[str] = set()
    for member in body.named_children if body is not None else []:
        if member.type == "comment":
            continue
        key = _js_key(
            member.child_by_field_name("name") if member.type == "enum_assignment" else member
        )
        if key is None:
            return None
        names.add(key)
    return frozenset(names - {""})


def _js_pattern_names(node: Node | None) -> set[str]:
    """The names a binding pattern binds (``a``, ``{a, b: c}``, ``[a, ...b]``, ``a = 1``)."""
    if node is None:
        return set()
    kind = node.type
    if kind in ("identifier", "shorthand_property_identifier_pattern"):
        return {_text(node)}
    if kind in ("pair_pattern", "required_parameter", "optional_parameter"):
        return _js_pattern_names(
            node.child_by_field_name("value") or node.child_by_field_name("pattern")
        )
    if kind in ("assignment_pattern", "object_assignment_pattern"):
        return _js_pattern_names(node.child_by_field_name("left"))
    if kind in ("object_pattern", "array_pattern", "rest_pattern", "formal_parameters"):
        return set().union(*(_js_pattern_names(c) for c in node.named_children))
    return set()


def _js_shadowed(node: Node, name: str) -> bool:
    """Whether ``name`` is bound in a scope around ``node`` below the module level."""
    parent = node.parent
    while parent is not None and parent.parent is not None:
        kind = parent.type
        bound: set[str] = set()
        if kind in ("function_expression", "function", "generator_function", "class"):
            bound.add(_text(parent.child_by_field_name("name")))  # visible inside only
        if kind in _JS_FUNCTIONS or kind in ("arrow_function", "method_definition"):
            bound |= _js_pattern_names(parent.child_by_field_name("parameters"))
            bound |= _js_pattern_names(parent.child_by_field_name("parameter"))
        elif kind == "catch_clause":
            bound |= _js_pattern_names(parent.child_by_field_name("parameter"))
        elif kind == "for_in_statement":
            bound |= _js_pattern_names(parent.child_by_field_name("left"))
        for child in parent.named_children:
            bound |= _js_declared(child)
        if name in bound:
            return True
        parent = parent.parent
    return False


def _js_declared(node: Node) -> set[str]:
    """The names a statement declares in its block (``for`` heads included)."""
    kind = node.type
    if kind in ("lexical_declaration", "variable_declaration"):
        names: set[str] = set()
        for declarator in node.named_children:
            names |= _js_pattern_names(declarator.child_by_field_name("name"))
        return names
    if kind in ("function_declaration", "generator_function_declaration", "class_declaration"):
        return {_text(node.child_by_field_name("name"))}
    if kind in ("abstract_class_declaration", "enum_declaration"):
        return {_text(node.child_by_field_name("name"))}
    return set()


# --- Python classes ----------------------------------------------------------------------


def _python_class_info(node: Node) -> ClassInfo:
    """A class's own members: what its body binds, and every ``self.x``/``cls.x`` in it.

    Unknown (None) for dynamic classes.
    """
    name = _text(node.child_by_field_name("name"))
    bases = _python_bases(node)
    body = node.child_by_field_name("body")
    decorators = _python_decorators(node)
    if (
        body is None
        or node.has_error
        or not set(decorators) <= _PY_CLASS_DECORATORS
        or _PY_DYNAMIC.search(_text(node))
    ):
        return ClassInfo(name, None, None, bases)
    names = _python_class_level_names(body)
    receivers = {"self", "cls"} | _python_first_params(body)
    pattern = rf"(?<![\w.])(?:{'|'.join(sorted(receivers))})\s*\.\s*([^\W\d]\w*)"
    names.update(re.findall(pattern, _text(body)))
    if decorators:
        names |= PY_DATACLASS_MEMBERS
    members = frozenset(names)
    return ClassInfo(name, members, members, bases)


def _python_bases(node: Node) -> tuple[str, ...] | None:
    superclasses = node.child_by_field_name("superclasses")
    if superclasses is None:
        return ()
    bases = []
    for child in superclasses.named_children:
        if child.type == "comment":
            continue
        if child.type != "identifier":
            return None  # metaclass=..., a dotted or subscripted base, *bases
        bases.append(_text(child))
    return tuple(bases)


def _python_decorators(node: Node) -> list[str]:
    """The decorators' names (a call's function), outermost first."""
    parent = node.parent
    if parent is None or parent.type != "decorated_definition":
        return []
    names = []
    for decorator in parent.named_children:
        if decorator.type != "decorator" or not decorator.named_children:
            continue
        expression = decorator.named_children[0]
        if expression.type == "call":
            expression = expression.child_by_field_name("function") or expression
        names.append(_text(expression))
    return names


def _python_owner_class(function: Node) -> Node | None:
    """The class a ``def`` is a method of, or None."""
    parent = function.parent
    if parent is not None and parent.type == "decorated_definition":
        parent = parent.parent
    if parent is None or parent.type != "block" or parent.parent is None:
        return None
    return parent.parent if parent.parent.type == "class_definition" else None


def _python_params(function: Node) -> list[str]:
    """The parameter names of a ``def`` or ``lambda``, in order."""
    params = function.child_by_field_name("parameters")
    names = []
    for param in params.named_children if params is not None else []:
        if param.type == "identifier":
            names.append(_text(param))
        elif param.type in ("default_parameter", "typed_default_parameter"):
            names.append(_text(param.child_by_field_name("name")))
        elif param.named_children and param.named_children[0].type == "identifier":
            names.append(_text(param.named_children[0]))  # typed, *args, **kwargs
    return names


def _python_first_params(body: Node) -> set[str]:
    """First parameter names of the methods in a class body."""
    names: set[str] = set()
    for child in body.named_children:
        if child.type == "decorated_definition":
            child = child.child_by_field_name("definition") or child
        if child.type == "function_definition":
            names.update(_python_params(child)[:1])
    return {n for n in names if n.isidentifier()}


def _python_class_level_names(body: Node) -> set[str]:
    """Names bound in a class body (nested functions and classes not entered)."""
    names: set[str] = set()
    stack = [body]
    while stack:
        node = stack.pop()
        kind = node.type
        if kind in ("function_definition", "class_definition"):
            names.add(_text(node.child_by_field_name("name")))
            continue
        if kind in (
            "lambda",
            "list_comprehension",
            "set_comprehension",
            "dictionary_comprehension",
        ):
            continue
        if kind in ("assignment", "augmented_assignment", "for_statement"):
            names |= _python_targets(node.child_by_field_name("left"))
        elif kind == "as_pattern_target":
            names |= _python_targets(node.named_children[0] if node.named_children else None)
        elif kind == "named_expression":
            names.add(_text(node.child_by_field_name("name")))
        elif kind in ("import_statement", "import_from_statement"):
            names |= _python_imported_names(node)
            continue
        elif kind == "type_alias_statement" and node.named_children:
            names.add(_text(node.named_children[0]).split("[")[0])
        stack.extend(node.named_children)
    return names


def _python_targets(node: Node | None) -> set[str]:
    """Names an assignment target binds (``a``, ``a, b``, ``[a, *b]``; not ``x.a``)."""
    if node is None:
        return set()
    if node.type == "identifier":
        return {_text(node)}
    if node.type in ("pattern_list", "tuple_pattern", "list_pattern", "list_splat_pattern"):
        return set().union(*(_python_targets(c) for c in node.named_children))
    if node.type in ("parenthesized_expression", "tuple", "list", "expression_list"):
        return set().union(*(_python_targets(c) for c in node.named_children))
    return set()


def _python_imported_names(node: Node) -> set[str]:
    names = set()
    for child in node.children_by_field_name("name"):
        if child.type == "aliased_import":
            names.add(_text(child.child_by_field_name("alias")))
        elif node.type == "import_statement":
            names.add(_text(child).split(".")[0])
        else:
            names.add(_text(child))
    return names
