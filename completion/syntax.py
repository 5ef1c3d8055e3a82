"""tree-sitter grammars: which language a document is, and a parser for it.

Python is always available (``tree-sitter-python``). JavaScript, TypeScript, Rust and Go
come with ``pip install 'pie-lsp[languages]'``; any other ``tree-sitter-<name>`` package
or ``tree-sitter-language-pack`` is picked up when installed.
A language without a grammar still gets completions, just no syntax tree.
"""

from __future__ import annotations

import importlib
import logging
from functools import cache

from tree_sitter import Language, Parser

log = logging.getLogger(__name__)

# LSP languageId -> tree-sitter-language-pack name, where they differ.
_ALIASES = {
    "javascriptreact": "javascript",
    "typescriptreact": "tsx",
    "shellscript": "bash",
    "sh": "bash",
    "c++": "cpp",
    "cs": "csharp",
    "py": "python",
}

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


# languageId -> (module, function) for grammars shipped as their own PyPI packages.
_PACKAGES = {
    "python": ("tree_sitter_python", "language"),
    "javascript": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "tsx": ("tree_sitter_typescript", "language_tsx"),
    "rust": ("tree_sitter_rust", "language"),
    "go": ("tree_sitter_go", "language"),
}


@cache
def get_language(language_id: str) -> Language | None:
    """The tree-sitter grammar for an LSP languageId, or None if none is installed.

    Per-language packages (``tree-sitter-python``, ``-javascript``, ...) come first; then
    ``tree-sitter-language-pack`` if installed (recent versions of it download grammars
    on first use, which fails offline: that is logged, not raised).
    """
    name = _ALIASES.get(language_id, language_id)
    module_name, func = _PACKAGES.get(name, (f"tree_sitter_{name}", "language"))
    try:
        module = importlib.import_module(module_name)
        return Language(getattr(module, func)())
    except (ImportError, AttributeError):
        pass
    try:
        from tree_sitter_language_pack import get_language as pack_get_language
    except ImportError:
        return None
    try:
        return pack_get_language(name)  # type: ignore[arg-type]
    except Exception as exc:  # unknown name, or a download that cannot happen offline
        log.info("no tree-sitter grammar for %r: %s", language_id, exc)
        return None


def make_parser(language_id: str) -> Parser | None:
    """A fresh parser for ``language_id``, or None without a grammar."""
    language = get_language(language_id)
    return Parser(language) if language is not None else None
