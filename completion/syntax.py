"""tree-sitter grammars: which language a document is, and a parser for it.

Only the languages in :data:`GRAMMARS` have a grammar: Python always
(``tree-sitter-python``), JavaScript, TypeScript/TSX, Rust and Go with
``pip install 'pie-lsp[languages]'``. A client's languageId selects a table entry (directly
or through :data:`ALIASES`) and is never turned into a module name itself, so any other
languageId (``"os"``, ``"../evil"``) imports nothing. Nothing here downloads a grammar.

A language without a grammar, or whose grammar fails to load (a wheel built for another
tree-sitter ABI), still gets completions, just no syntax tree; a failure is logged once
per language.
"""

from __future__ import annotations

import importlib
import logging
from functools import cache

from tree_sitter import Language, Parser, Tree

log = logging.getLogger(__name__)

GRAMMARS: dict[str, tuple[str, str]] = {
    "python": ("tree_sitter_python", "language"),
    "javascript": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "tsx": ("tree_sitter_typescript", "language_tsx"),
    "rust": ("tree_sitter_rust", "language"),
    "go": ("tree_sitter_go", "language"),
}
"""Grammar name -> (module, function returning the language pointer). The only modules
this file ever imports."""

ALIASES: dict[str, str] = {
    "javascriptreact": "javascript",
    "typescriptreact": "tsx",
    "py": "python",
}
"""Other LSP languageIds -> a :data:`GRAMMARS` key."""

# File extension -> LSP languageId, for the CLI (no client tells us the language there).
EXTENSIONS = {
    ".py": "python",
    ".pyi": "python",
    ".js": "javascript",
    ".jsx": "javascriptreact",
    ".ts": "typescript",
    ".tsx": "typescriptreact",
    ".rs": "rust",
    ".go": "go",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".hpp": "cpp",
    ".java": "java",
    ".rb": "ruby",
    ".lua": "lua",
    ".sh": "bash",
    ".md": "markdown",
    ".json": "json",
    ".toml": "toml",
    ".yaml": "yaml",
    ".yml": "yaml",
}


def language_for_path(path: str) -> str:
    """LSP languageId guessed from a file name ("plaintext" when unknown)."""
    for ext, lang in EXTENSIONS.items():
        if path.endswith(ext):
            return lang
    return "plaintext"


def grammar_name(language_id: str) -> str | None:
    """The :data:`GRAMMARS` key for an LSP languageId, or None when it has no grammar."""
    name = ALIASES.get(language_id, language_id)
    return name if name in GRAMMARS else None


def get_language(language_id: str) -> Language | None:
    """The tree-sitter grammar for an LSP languageId, or None.

    None when the languageId is not in the table, when its package is not installed, or
    when loading it fails; never raises.
    """
    name = grammar_name(language_id)
    return _load(name) if name is not None else None


@cache
def _load(name: str) -> Language | None:
    """Load the grammar ``GRAMMARS[name]`` once (a failure is cached and logged once)."""
    module_name, func = GRAMMARS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        log.info("no tree-sitter grammar for %s: %s is not installed", name, module_name)
        return None
    try:
        return Language(getattr(module, func)())
    except Exception as exc:  # ABI mismatch (ValueError), a broken wheel, ...
        log.warning(
            "tree-sitter grammar for %s failed to load (%s: %s): no syntax tree",
            name,
            type(exc).__name__,
            exc,
        )
        return None


def make_parser(language_id: str) -> Parser | None:
    """A fresh parser for ``language_id``, or None without a (loadable) grammar."""
    language = get_language(language_id)
    return Parser(language) if language is not None else None


def exact_tree(tree: Tree | None, text: str, language_id: str) -> Tree | None:
    """``tree`` (an incremental reparse of ``text``) as a fresh parse would give it.

    Where the text parses without errors the incremental tree is the fresh one; with
    errors, tree-sitter's incremental error recovery can end differently
    (tree-sitter/tree-sitter#4001), so ``text`` is parsed again from scratch (about
    10 ms for 2,000 lines: the caller runs this off the event loop, only for requests
    that run).
    """
    if tree is None or not tree.root_node.has_error:
        return tree
    parser = make_parser(language_id)
    return parser.parse(text.encode("utf-8", "surrogatepass")) if parser is not None else tree
