"""tree-sitter grammars: which language a document is, and a parser for it.

Python is always available (``tree-sitter-python``). Other languages come from
``tree-sitter-language-pack`` when it is installed (``pip install 'pie-lsp[languages]'``).
A language without a grammar still gets completions, just no syntax tree.
"""

from __future__ import annotations

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


@cache
def get_language(language_id: str) -> Language | None:
    """The tree-sitter grammar for an LSP languageId, or None if none is installed."""
    name = _ALIASES.get(language_id, language_id)
    if name == "python":
        import tree_sitter_python

        return Language(tree_sitter_python.language())
    try:
        from tree_sitter_language_pack import get_language as pack_get_language
    except ImportError:
        return None
    try:
        return pack_get_language(name)  # type: ignore[arg-type]
    except Exception:  # unknown name: the pack raises LookupError or its own error type
        log.debug("no tree-sitter grammar for %r", language_id)
        return None


def make_parser(language_id: str) -> Parser | None:
    """A fresh parser for ``language_id``, or None without a grammar."""
    language = get_language(language_id)
    return Parser(language) if language is not None else None
