"""The symbol-table member oracle: complete lists where a table can be sure, None elsewhere."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from completion import symbol_oracle
from completion.symbol_oracle import (
    JS_FUNCTION_MEMBERS,
    JS_OBJECT_MEMBERS,
    PLACEHOLDER,
    PY_DATACLASS_MEMBERS,
    PY_OBJECT_MEMBERS,
    PY_TYPE_MEMBERS,
    receiver,
    symbol_members,
)

CURSOR = "▮"


def members(
    language_id: str,
    source: str,
    workspace: Sequence[tuple[str, str]] = (),
    path: str | None = None,
) -> frozenset[str] | None:
    """The oracle's answer with the offset at :data:`CURSOR` (removed from the text)."""
    offset = source.index(CURSOR)
    text = source.replace(CURSOR, "", 1)
    return symbol_members(language_id, text, offset, workspace, path=path)


def own(found: frozenset[str] | None, *universal: frozenset[str]) -> set[str] | None:
    """The answer without the members every object has."""
    if found is None:
        return None
    assert PLACEHOLDER not in found
    for names in universal:
        assert names <= found
    return set(found.difference(*universal))


def js_own(found: frozenset[str] | None) -> set[str] | None:
    return own(found, JS_OBJECT_MEMBERS)


def js_static(found: frozenset[str] | None) -> set[str] | None:
    return own(found, JS_OBJECT_MEMBERS, JS_FUNCTION_MEMBERS)


def py_own(found: frozenset[str] | None) -> set[str] | None:
    return own(found, PY_OBJECT_MEMBERS)


# --- JavaScript / TypeScript: this. ------------------------------------------------------

TS_CLASS = """\
class Shape {
  x = 1;
  private y: number;
  #secret = 2;
  static count = 0;
  static make() { return new Shape(); }
  constructor(private readonly origin: Point, public name?: string, plain: number) {
    this.area = 0;
  }
  get size() { return 1; }
  set size(v) {}
  'quoted'() {}
  draw(): void {
    ▮
  }
}
"""


def test_ts_this_lists_the_instance_side() -> None:
    found = members("typescript", TS_CLASS.replace("▮", "this.▮"))
    assert js_own(found) == {
        "x",
        "y",
        "#secret",
        "origin",
        "name",
        "area",
        "size",
        "quoted",
        "draw",
    }


@pytest.mark.parametrize(
    "place",
    [
        "constructor() { this.▮ }",
        "f = this.▮;",
        "g = () => { return this.▮ };",
        "h() { const k = () => this.▮; }",
        "i(a = this.▮) {}",
    ],
    ids=["constructor", "field", "arrow-field", "arrow-in-method", "default-parameter"],
)
def test_js_this_in_members(place: str) -> None:
    found = members("javascript", f"class A {{\n  v = 1;\n  {place}\n  m() {{}}\n}}\n")
    assert found is not None
    assert {"v", "m"} <= js_own(found)  # type: ignore[operator]


def test_js_this_in_static_members_is_the_class() -> None:
    source = "class A {\n  v = 1;\n  static s = 2;\n  static m() { this.▮ }\n  n() {}\n}\n"
    assert js_static(members("javascript", source)) == {"s", "m"}
    block = "class A {\n  v = 1;\n  static s = 2;\n  static { this.▮ }\n}\n"
    assert js_static(members("javascript", block)) == {"s"}


def test_js_inherits_from_classes_in_the_file() -> None:
    source = (
        "class A { a() {} static sa() {} }\n"
        "class B extends A { b = 1; }\n"
        "class C extends B {\n  c() { this.▮ }\n}\n"
    )
    assert js_own(members("javascript", source)) == {"a", "b", "c"}


def test_js_super_lists_the_base() -> None:
    source = "class A { a() {} static sa() {} }\nclass B extends A {\n  b() { super.▮ }\n}\n"
    assert js_own(members("javascript", source)) == {"a"}
    static = "class A { a() {} static sa() {} }\nclass B extends A {\n  static b() { super.▮ }\n}\n"
    assert js_static(members("javascript", static)) == {"sa"}


BASE_TS = "export class Base {\n  protected base = 1;\n  hello(): string { return ''; }\n}\n"


@pytest.mark.parametrize(
    ("source", "files", "path"),
    [
        ("import { Base } from './base';", [("/p/src/base.ts", BASE_TS)], "/p/src/a.ts"),
        ("import { Base } from '../lib/base.js';", [("/p/lib/base.ts", BASE_TS)], "/p/src/a.ts"),
        ("import { Base } from './lib';", [("/p/src/lib/index.ts", BASE_TS)], "/p/src/a.ts"),
        (
            "import { Base as B0 } from './index';",
            [("/p/src/index.ts", "export { Base } from './base';"), ("/p/src/base.ts", BASE_TS)],
            "file:///p/src/a.ts",
        ),
        (
            "import Base from './base';",
            [("/p/src/base.ts", BASE_TS.replace("export class", "export default class"))],
            "/p/src/a.ts",
        ),
        ("import { Base } from './base';", [("/elsewhere/src/base.ts", BASE_TS)], None),
    ],
    ids=["relative", "js-extension", "index", "re-export", "default", "no-path"],
)
def test_ts_inherits_from_a_workspace_file(
    source: str, files: list[tuple[str, str]], path: str | None
) -> None:
    base = "B0" if "B0" in source else "Base"
    text = f"{source}\nclass A extends {base} {{\n  own = 2;\n  m() {{ this.▮ }}\n}}\n"
    assert js_own(members("typescript", text, files, path)) == {"base", "hello", "own", "m"}


def test_ts_workspace_base_that_is_not_found() -> None:
    text = "import { Base } from './base';\nclass A extends Base {\n  m() { this.▮ }\n}\n"
    assert members("typescript", text, [("/p/other.ts", BASE_TS)], "/p/a.ts") is None
    ambiguous = [("/p/x/base.ts", BASE_TS), ("/p/y/base.ts", BASE_TS)]
    assert members("typescript", text, ambiguous) is None


@pytest.mark.parametrize(
    "source",
    [
        "import { Component } from 'react';\nclass A extends Component {\n  m() { this.▮ }\n}\n",
        "class A extends React.Component {\n  m() { this.▮ }\n}\n",
        "class A extends mixin(B) {\n  m() { this.▮ }\n}\n",
        "class A extends Unknown {\n  m() { this.▮ }\n}\n",
        "class A extends B {\n  m() { this.▮ }\n}\nclass B extends A {}\n",
        "class A {\n  m() {\n    const f = function () { return this.▮ };\n  }\n}\n",
        "class A {\n  m() {\n    function f() { return this.▮ }\n  }\n}\n",
        "const o = {\n  m() { this.▮ }\n};\n",
        "class A {\n  m() {\n    const o = { n() { return this.▮ } };\n  }\n}\n",
        "function f() {\n  this.▮\n}\n",
        "this.▮\n",
        "class A {\n  [key: string]: unknown;\n  m() { this.▮ }\n}\n",
        "class A {\n  m() { Object.assign(this, {x: 1}); this.▮ }\n}\n",
        "class A {\n  m(k) { this[k] = 1; this.▮ }\n}\n",
        "class A {\n  [name()]() {}\n  m() { this.▮ }\n}\n",
        "class A { m() {} }\ninterface A { extra: number }\nclass B extends A {\n  n() { this.▮ }\n}\n",
    ],
    ids=[
        "package-base",
        "member-base",
        "call-base",
        "undeclared-base",
        "cycle",
        "function-expression",
        "function-declaration",
        "object-method",
        "object-method-in-class",
        "plain-function",
        "module",
        "index-signature",
        "object-assign",
        "computed-assignment",
        "computed-name",
        "interface-merge",
    ],
)
def test_js_this_unknown(source: str) -> None:
    assert members("typescript", source) is None


def test_js_decorated_class_is_unknown_but_ts_is_not() -> None:
    source = "@sealed\nclass A {\n  m() { this.▮ }\n}\n"
    assert members("javascript", source) is None
    assert js_own(members("typescript", source)) == {"m"}


@pytest.mark.parametrize(
    ("language_id", "source", "files"),
    [
        (
            "javascript",
            "class A {\n  run() { this.▮ }\n}\nclass B extends A {\n  step() {}\n}\n",
            [],
        ),
        (
            "javascript",
            "class A {\n  run() { this.▮ }\n}\n",
            [("/p/b.js", "class B extends A {}\n")],
        ),
        (
            "python",
            "class A:\n    def run(self):\n        self.▮\nclass B(A):\n    def step(self): pass\n",
            [],
        ),
        (
            "python",
            "class A:\n    def run(self):\n        self.▮\n",
            [("/p/b.py", "class B(mod.A):\n    pass\n")],
        ),
    ],
    ids=["js-file", "js-workspace", "python-file", "python-workspace"],
)
def test_base_classes_may_use_subclass_members(
    language_id: str, source: str, files: list[tuple[str, str]]
) -> None:
    # A template method: the base calls what only its subclasses define.
    assert members(language_id, source, files) is None


def test_typescript_base_classes_declare_what_they_use() -> None:
    source = "class A {\n  run() { this.▮ }\n}\nclass B extends A {\n  step() {}\n}\n"
    assert js_own(members("typescript", source)) == {"run"}


# --- JavaScript / TypeScript: ClassName., EnumName., ns. ----------------------------------


def test_js_class_name_lists_statics() -> None:
    source = (
        "class Foo {\n  static a = 1;\n  static b() {}\n  static get c() { return 1; }\n"
        "  inst = 2;\n  m() {}\n}\nFoo.defaultProps = {};\nFoo.▮\n"
    )
    assert js_static(members("javascript", source)) == {"a", "b", "c", "defaultProps"}


def test_js_class_name_inherits_statics() -> None:
    source = "class A { static a() {} }\nclass B extends A { static b() {} }\nB.▮\n"
    assert js_static(members("javascript", source)) == {"a", "b"}


def test_js_prototype_assignments_are_instance_members() -> None:
    source = "class A {\n  m() { this.▮ }\n}\nA.prototype.extra = function () {};\n"
    assert js_own(members("javascript", source)) == {"m", "extra"}


def test_ts_class_from_a_workspace_file() -> None:
    files = [("/p/util.ts", "export class Util {\n  static parse(s: string) {}\n}\n")]
    source = "import { Util } from './util';\nUtil.▮\n"
    assert js_static(members("typescript", source, files, "/p/main.ts")) == {"parse"}


@pytest.mark.parametrize(
    "source",
    [
        "class Foo { static a = 1; }\nfunction f(Foo) { return Foo.▮ }\n",
        "class Foo { static a = 1; }\nfunction f() { const Foo = {}; return Foo.▮ }\n",
        "class Foo { static a = 1; }\nfor (const Foo of xs) { Foo.▮ }\n",
        "class Foo { static a = 1; }\nObject.assign(Foo, mixin);\nFoo.▮\n",
        "import Foo from 'foo';\nFoo.▮\n",
        "Bar.▮\n",
        "class Foo {}\nnamespace Foo { export const extra = 1; }\nFoo.▮\n",
    ],
    ids=[
        "parameter",
        "local-const",
        "for-of",
        "object-assign",
        "package",
        "undeclared",
        "namespace",
    ],
)
def test_js_class_name_unknown(source: str) -> None:
    assert members("typescript", source) is None


def test_ts_enum_members() -> None:
    source = "enum Color { Red, Green = 2, 'Blue' = 3 }\nconst enum K { A }\nlet c = Color.▮\n"
    assert js_own(members("typescript", source)) == {"Red", "Green", "Blue"}
    assert js_own(members("typescript", source.replace("Color.▮", "K.▮"))) == {"A"}


def test_ts_enum_from_a_workspace_file() -> None:
    files = [("src/kinds.ts", "export enum Kind {\n  A = 'a',\n  B = 'b',\n}\n")]
    source = "import { Kind } from './kinds';\nconst k = Kind.▮\n"
    assert js_own(members("typescript", source, files, "src/main.ts")) == {"A", "B"}


X_MODULE = """\
export const a = 1, { b, c: d } = obj;
export function f() {}
export class K {}
export type T = number;
const hidden = 1, e = 2;
export { e, hidden as shown };
export * from './y';
export * as nested from './z';
"""


def test_ts_namespace_import_lists_exports() -> None:
    files = [
        ("src/x.ts", X_MODULE),
        ("src/y.ts", "export const fromY = 1;\nexport default 'y';\n"),
    ]
    source = "import * as ns from './x';\nns.▮\n"
    assert members("typescript", source, files, "src/main.ts") == {
        "a",
        "b",
        "d",
        "f",
        "K",
        "T",
        "e",
        "shown",
        "fromY",
        "nested",
    }
    files.append(("src/w.ts", "export default class {}\n"))
    default = "import * as ns from './w';\nns.▮\n"
    assert members("typescript", default, files, "src/main.ts") == {"default"}


@pytest.mark.parametrize(
    "files",
    [
        [],
        [("src/x.ts", "export * from './missing';\nexport const a = 1;\n")],
        [("src/x.js", "module.exports = { a: 1 };\n")],
        [("src/x.ts", "const a = 1;\nexport = a;\n")],
    ],
    ids=["not-in-workspace", "missing-star", "commonjs", "export-assignment"],
)
def test_ts_namespace_import_unknown(files: list[tuple[str, str]]) -> None:
    assert members("typescript", "import * as ns from './x';\nns.▮\n", files, "src/main.ts") is None


@pytest.mark.parametrize(
    "source",
    [
        "foo().▮",
        "a[0].▮",
        "a.b.▮",
        "this.a.▮",
        "1.▮",
        "'s'.▮",
        "`t`.▮",
        "#p.▮",
        "new.▮",
        "x?.y.▮",
    ],
)
def test_js_receivers_that_are_not_understood(source: str) -> None:
    text = f"class A {{\n  a = 1;\n  m() {{ return {source} }}\n}}\n"
    assert members("javascript", text) is None


@pytest.mark.parametrize(
    "source",
    [
        "class A {\n  a = 1;\n  m() {\n    // this.▮\n  }\n}\n",
        "class A {\n  a = 1;\n  m() {\n    return 'this.▮';\n  }\n}\n",
        "class A {\n  a = 1;\n  m() {\n    /* this.▮ */\n  }\n}\n",
    ],
    ids=["line-comment", "string", "block-comment"],
)
def test_js_no_answer_in_comments_and_strings(source: str) -> None:
    assert members("javascript", source) is None


def test_js_optional_chaining_and_spread() -> None:
    assert js_own(members("javascript", "class A {\n  a = 1;\n  m() { this?.▮ }\n}\n")) == {
        "a",
        "m",
    }
    spread = "class A {\n  a = 1;\n  m() { return {...this.▮} }\n}\n"
    assert js_own(members("javascript", spread)) == {"a", "m"}


# --- Python ------------------------------------------------------------------------------

PY_CLASS = """\
class Widget:
    kind = "w"
    size: int = 3
    label: str
    a1 = b1 = 0
    x1, (y1, z1) = 1, (2, 3)
    if DEBUG:
        debug_only = True

    class Inner:
        pass

    def __init__(self, parent):
        self.parent = parent
        self.p, self.q = 1, 2
        self.count: int = 0
        [self.r, *self.s] = [1, 2, 3]

    @property
    def name(self):
        return self._name

    def draw(self):
        ▮
"""

PY_WIDGET = {
    "kind",
    "size",
    "label",
    "a1",
    "b1",
    "x1",
    "y1",
    "z1",
    "debug_only",
    "Inner",
    "parent",
    "p",
    "q",
    "count",
    "r",
    "s",
    "name",
    "_name",
    "draw",
}


def test_python_self_lists_the_class() -> None:
    found = members("python", PY_CLASS.replace("▮", "self.▮"))
    assert py_own(found) == PY_WIDGET


def test_python_cls_adds_the_type_members() -> None:
    source = PY_CLASS.replace(
        "    def draw(self):\n        ▮", "    @classmethod\n    def make(cls):\n        cls.▮"
    )
    found = members("python", source)
    assert found is not None
    assert {"__name__", "mro", "__subclasses__"} <= found
    assert own(found, PY_OBJECT_MEMBERS, PY_TYPE_MEMBERS) == PY_WIDGET - {"draw"} | {"make"}


def test_python_self_in_closures_and_lambdas() -> None:
    source = "class A:\n    def m(self):\n        def inner():\n            return self.▮\n        self.v = 1\n"
    assert py_own(members("python", source)) == {"m", "v"}
    lam = "class A:\n    def m(self):\n        f = lambda: self.▮\n"
    assert py_own(members("python", lam)) == {"m"}


def test_python_inherits_from_the_file() -> None:
    source = (
        "class A(object):\n    a = 1\n    def __init__(self):\n        self.aa = 2\n"
        "class B(A):\n    def b(self):\n        return self.▮\n"
    )
    assert py_own(members("python", source)) == {"a", "aa", "b"}


def test_python_super() -> None:
    source = "class A:\n    def a(self): pass\nclass B(A):\n    def a(self):\n        super().▮\n"
    assert py_own(members("python", source)) == {"a"}
    nested = "class A:\n    def a(self): pass\nclass B(A):\n    def a(self):\n        def f():\n            super().▮\n"
    assert members("python", nested) is None


BASE_PY = "class Base:\n    shared = 1\n    def helper(self):\n        self.state = 0\n"


@pytest.mark.parametrize(
    ("imports", "files", "path"),
    [
        ("from .base import Base", [("/p/pkg/base.py", BASE_PY)], "/p/pkg/mod.py"),
        ("from ..base import Base", [("/p/base.py", BASE_PY)], "/p/pkg/mod.py"),
        ("from pkg.base import Base", [("/root/src/pkg/base.py", BASE_PY)], "/root/src/pkg/mod.py"),
        (
            "from pkg import Base",
            [("/r/pkg/__init__.py", "from .base import Base\n"), ("/r/pkg/base.py", BASE_PY)],
            None,
        ),
        ("from pkg.base import *", [("/r/pkg/base.py", BASE_PY)], None),
    ],
    ids=["relative", "parent", "absolute", "package-reexport", "star"],
)
def test_python_inherits_from_a_workspace_file(
    imports: str, files: list[tuple[str, str]], path: str | None
) -> None:
    source = f"{imports}\n\nclass Mine(Base):\n    def run(self):\n        self.▮\n"
    assert py_own(members("python", source, files, path)) == {"shared", "helper", "state", "run"}


@pytest.mark.parametrize(
    "source",
    [
        "class A(Base):\n    def m(self):\n        self.▮\n",
        "from lib import Base\nclass A(Base):\n    def m(self):\n        self.▮\n",
        "class A(mod.Base):\n    def m(self):\n        self.▮\n",
        "class A(Generic[T]):\n    def m(self):\n        self.▮\n",
        "class A(metaclass=Meta):\n    def m(self):\n        self.▮\n",
        "class A:\n    def __getattr__(self, name): pass\n    def m(self):\n        self.▮\n",
        "class A:\n    def __getattribute__(self, name): pass\n    def m(self):\n        self.▮\n",
        "class A:\n    __slots__ = ('a',)\n    def m(self):\n        self.▮\n",
        "class A:\n    def m(self):\n        setattr(self, 'x', 1)\n        self.▮\n",
        "class A:\n    def m(self):\n        self.__dict__.update(kw)\n        self.▮\n",
        "class A:\n    def m(self):\n        self.▮\nsetattr(A, 'x', 1)\n",
        "@register\nclass A:\n    def m(self):\n        self.▮\n",
        "class B:\n    def __getattr__(self, n): pass\nclass A(B):\n    def m(self):\n        self.▮\n",
        "class A:\n    @staticmethod\n    def m(self):\n        self.▮\n",
        "class A:\n    def m(this):\n        self.▮\n",
        "class A:\n    def m(self):\n        def inner(self):\n            self.▮\n",
        "class A:\n    def m(self):\n        f = lambda self: self.▮\n",
        "class A:\n    def m(self):\n        self = other\n        self.▮\n",
        "class A:\n    x = self.▮\n",
        "def f(self):\n    self.▮\n",
        "self.▮\n",
    ],
    ids=[
        "undeclared-base",
        "package-base",
        "dotted-base",
        "generic-base",
        "metaclass",
        "getattr",
        "getattribute",
        "slots",
        "setattr",
        "dict",
        "setattr-outside",
        "decorator",
        "base-getattr",
        "staticmethod",
        "not-first-parameter",
        "nested-def",
        "lambda-parameter",
        "rebound",
        "class-body",
        "function",
        "module",
    ],
)
def test_python_unknown(source: str) -> None:
    assert members("python", source) is None


@pytest.mark.parametrize(
    "decorator", ["@dataclass", "@dataclass(frozen=True)", "@dataclasses.dataclass"]
)
def test_python_dataclass(decorator: str) -> None:
    source = (
        f"{decorator}\nclass P:\n    x: int\n    y: int = 0\n    def m(self):\n        self.▮\n"
    )
    assert own(members("python", source), PY_OBJECT_MEMBERS, PY_DATACLASS_MEMBERS) == {
        "x",
        "y",
        "m",
    }


def test_python_class_attributes_set_outside() -> None:
    source = "class A:\n    def m(self):\n        self.▮\nA.extra = 1\n"
    assert py_own(members("python", source)) == {"m", "extra"}


@pytest.mark.parametrize("source", ["x.▮", "foo().▮", "self.a.▮", "super(A, self).▮", "obj.▮"])
def test_python_receivers_that_are_not_understood(source: str) -> None:
    text = f"class A:\n    a = 1\n    def m(self):\n        return {source}\n"
    assert members("python", text) is None


def test_python_no_answer_in_comments_and_strings() -> None:
    assert members("python", "class A:\n    def m(self):\n        # self.▮\n        pass\n") is None
    assert members("python", "class A:\n    def m(self):\n        s = 'self.▮'\n") is None


# --- mid-edit text -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "this.▮",
        "this.▮\n    const after = 1;",
        "this.▮na",
        "this.▮na = 3;",
        "if (this.▮",
        "if (this.▮na",
        "foo(1, this.▮",
        "foo([this.▮",
        "const o = { k: this.▮",
        "if (x) {\n      this.▮",
        "return `${this.▮",
        "return `a ${b} ${this.▮",
        "return `${this.▮}`;",
    ],
)
def test_js_half_typed(line: str) -> None:
    source = f"class A {{\n  a = 1;\n  m() {{\n    {line}\n  }}\n  later() {{}}\n}}\nclass B {{}}\n"
    assert js_own(members("typescript", source)) == {"a", "m", "later"}


@pytest.mark.parametrize(
    "line",
    [
        "self.▮",
        "self.▮\n        after = 1",
        "self.▮na",
        "self.▮na = 3",
        "if self.▮",
        "for x in self.▮",
        "foo(1, self.▮",
        "d = {'k': self.▮",
        "while self.▮na",
        'x = f"{self.▮',
        "print(f'''{self.▮",
        'x = f"{self.▮}"',
    ],
)
def test_python_half_typed(line: str) -> None:
    source = f"class A:\n    a = 1\n\n    def m(self):\n        {line}\n\n    def later(self):\n        pass\n\n\nclass B:\n    pass\n"
    assert py_own(members("python", source)) == {"a", "m", "later"}


def test_python_class_cut_short_by_a_dedent_is_unknown() -> None:
    # The rest of the line after the cursor moved to column 0: tree-sitter ends the class
    # there without an error, and the members after it would be lost.
    source = "class A:\n    def m(self):\n        self.▮\nx = 1\n        y = 2\n    def later(self):\n        pass\n"
    assert members("python", source) is None


def test_typed_name_is_not_a_member() -> None:
    source = "class A {\n  a = 1;\n  m() { this.▮typo }\n}\n"
    assert "typo" not in members("javascript", source)  # type: ignore[operator]
    py = "class A:\n    def m(self):\n        self.▮typo\n"
    assert "typo" not in members("python", py)  # type: ignore[operator]


# --- offsets and line endings ------------------------------------------------------------


def test_emoji_and_cjk_before_the_cursor() -> None:
    js = "class 形 {\n  s = '😀😀漢字';\n  t = \"🎉\";\n  m() {\n    const y = '😀'; this.▮\n  }\n  n() {}\n}\n"
    assert js_own(members("javascript", js)) == {"s", "t", "m", "n"}
    py = "class 形:\n    s = '😀😀漢字'\n    def m(self):\n        y = '😀🎉'; self.▮\n        self.名前 = 1\n"
    assert py_own(members("python", py)) == {"s", "m", "名前"}


def test_crlf_line_endings() -> None:
    js = "class A {\r\n  a = 1;\r\n  m() {\r\n    if (this.▮\r\n  }\r\n  later() {}\r\n}\r\n"
    assert js_own(members("typescript", js)) == {"a", "m", "later"}
    py = "class A:\r\n    a = 1\r\n    def m(self):\r\n        if self.▮\r\n    def later(self):\r\n        pass\r\n"
    assert py_own(members("python", py)) == {"a", "m", "later"}


# --- the entry point ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language_id", "text", "offset"),
    [
        ("rust", "self.", 5),
        ("plaintext", "this.", 5),
        ("javascript", "this.", 0),
        ("javascript", "this.", 6),
        ("javascript", "this.x", 6),
        ("python", "", 0),
    ],
)
def test_nothing_to_answer(language_id: str, text: str, offset: int) -> None:
    assert symbol_members(language_id, text, offset) is None


@pytest.mark.parametrize("language_id", ["javascriptreact", "typescriptreact", "tsx"])
def test_react_language_ids(language_id: str) -> None:
    source = "class A {\n  a = 1;\n  render() {\n    return <div>{this.▮}</div>;\n  }\n}\n"
    assert js_own(members(language_id, source)) == {"a", "render"}


@pytest.mark.parametrize(
    ("text", "python", "expected"),
    [
        ("this.", False, ("this", "this", 0, 4)),
        ("  x = super.", False, ("super", "super", 6, 11)),
        ("a = Foo.", False, ("name", "Foo", 4, 7)),
        ("this?.", False, ("this", "this", 0, 4)),
        ("self.", True, ("this", "self", 0, 4)),
        ("cls.", True, ("this", "cls", 0, 3)),
        ("super().", True, ("super", "super", 0, 7)),
        ("x.self.", True, None),
        ("xsuper().", True, None),
        ("Foo.", True, None),
        ("typeof.", False, None),
        ("$.", False, ("name", "$", 0, 1)),
        ("#p.", False, None),
        ("@Foo.", False, ("name", "Foo", 1, 4)),
    ],
)
def test_receiver(text: str, python: bool, expected: tuple[str, str, int, int] | None) -> None:
    found = receiver(text, len(text), python=python)
    assert (tuple(found) if found is not None else None) == expected


def test_workspace_tables_are_cached() -> None:
    symbol_oracle._file_table.cache_clear()
    files = [("/p/base.ts", BASE_TS)]
    text = "import { Base } from './base';\nclass A extends Base {\n  m() { this.▮ }\n}\n"
    first = members("typescript", text, files, "/p/a.ts")
    second = members("typescript", text.replace("m()", "n()"), files, "/p/a.ts")
    assert first is not None and second is not None
    info = symbol_oracle._file_table.cache_info()
    assert (info.misses, info.hits) == (1, 1)
