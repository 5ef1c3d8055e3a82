"""The server's own copy of every open document, kept in step edit by edit.

pygls applies all ``contentChanges`` of a ``didChange`` before our handler runs, so we
replay each change, in order, against our own pre-edit copy and derive one
:class:`TextEdit` per change (str offsets, UTF-8 byte offsets and tree-sitter points).
That record is what the syntax tree (and, later, the token alignment and the KV cache)
are updated from.

The syntax tree is lazy: opening or editing a document never parses. An edit only marks
a tree that was already built (``tree.edit``, cheap), and the next read of
:attr:`Document.tree` reparses incrementally from it; a document whose tree nobody reads
is never parsed at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tree_sitter import Parser, Tree

from completion.syntax import make_parser

from .positions import Encoding, LineIndex, advance_point, byte_offset, point_at


@dataclass(frozen=True)
class TextEdit:
    """One replayed content change, in every coordinate system we use."""

    start: int
    """Str offset where the replaced range starts."""
    old_end: int
    """Str offset where the replaced range ended, in the old text."""
    new_end: int
    """Str offset where the inserted text ends, in the new text."""
    start_byte: int
    old_end_byte: int
    new_end_byte: int
    start_point: tuple[int, int]
    old_end_point: tuple[int, int]
    new_end_point: tuple[int, int]
    inserted: str


@dataclass
class Document:
    """Text, version, language and (lazily parsed) syntax tree of one open document.

    Not thread-safe: edits and reads of :attr:`tree` belong on one thread (the event loop).
    """

    uri: str
    text: str
    version: int
    language_id: str
    parser: Parser | None = field(default=None, repr=False)
    """Parser for ``language_id``; None when the language has no (loadable) grammar."""
    unsaved: bool = False
    """Edited since it was opened or last saved (its file on disk is older)."""
    _tree: Tree | None = field(default=None, repr=False)
    """The last tree parsed, edited (not reparsed) by every change since when ``_stale``."""
    _stale: bool = field(default=False, repr=False)
    _index: LineIndex | None = field(default=None, repr=False)

    @classmethod
    def open(cls, uri: str, text: str, version: int, language_id: str) -> Document:
        """Open a document (its grammar is looked up, nothing is parsed yet)."""
        doc = cls(uri=uri, text=text, version=version, language_id=language_id)
        doc.parser = make_parser(language_id)
        return doc

    @property
    def tree(self) -> Tree | None:
        """Syntax tree of the current text; None without a parser.

        Parsed on first read, then reparsed incrementally (from the edited old tree) on
        the first read after edits; reads without edits in between reuse the tree.
        Where the text has errors, tree-sitter's incremental error recovery can end
        differently from a fresh parse: the engine, off the event loop, parses such a
        text again (:func:`completion.syntax.exact_tree`).
        """
        if self.parser is None:
            return None
        if self._tree is None:
            self._tree = self.parser.parse(self._source())
        elif self._stale:
            self._tree = self.parser.parse(self._source(), self._tree)
        self._stale = False
        return self._tree

    def _source(self) -> bytes:
        return self.text.encode("utf-8", "surrogatepass")

    @property
    def index(self) -> LineIndex:
        """Line table of the current text (built lazily, once per version)."""
        if self._index is None or self._index.text is not self.text:
            self._index = LineIndex.of(self.text)
        return self._index

    def replace_all(self, text: str) -> TextEdit:
        """Apply a full-text change."""
        return self._replace(0, len(self.text), text)

    def apply_change(
        self,
        start: tuple[int, int],
        end: tuple[int, int],
        text: str,
        encoding: Encoding,
    ) -> TextEdit:
        """Apply one ranged content change (LSP positions in ``encoding``).

        Positions past the end of a line or of the document are clamped, as the LSP
        specification asks.
        """
        index = self.index
        a = index.offset(*start, encoding, strict=False)
        b = index.offset(*end, encoding, strict=False)
        if b < a:
            a, b = b, a
        return self._replace(a, b, text)

    def _replace(self, a: int, b: int, inserted: str) -> TextEdit:
        old = self.text
        start_point = point_at(old, a)
        edit = TextEdit(
            start=a,
            old_end=b,
            new_end=a + len(inserted),
            start_byte=byte_offset(old, a),
            old_end_byte=byte_offset(old, b),
            new_end_byte=byte_offset(old, a) + len(inserted.encode("utf-8", "surrogatepass")),
            start_point=start_point,
            old_end_point=point_at(old, b),
            new_end_point=advance_point(start_point, inserted),
            inserted=inserted,
        )
        self.text = old[:a] + inserted + old[b:]
        self._edit_tree(edit)
        return edit

    def _edit_tree(self, edit: TextEdit) -> None:
        """Tell a tree already built about ``edit``; the reparse waits for a read."""
        if self._tree is None:
            return
        self._tree.edit(
            edit.start_byte,
            edit.old_end_byte,
            edit.new_end_byte,
            edit.start_point,
            edit.old_end_point,
            edit.new_end_point,
        )
        self._stale = True


class UnknownDocumentError(KeyError):
    """A request named a document that is not open."""


class DocumentStore:
    """All open documents by URI."""

    def __init__(self) -> None:
        self._docs: dict[str, Document] = {}

    def open(self, uri: str, text: str, version: int, language_id: str) -> Document:
        """Open (or re-open) a document."""
        doc = Document.open(uri, text, version, language_id)
        self._docs[uri] = doc
        return doc

    def get(self, uri: str) -> Document:
        """The open document at ``uri``; raises :class:`UnknownDocumentError`."""
        try:
            return self._docs[uri]
        except KeyError:
            raise UnknownDocumentError(f"document not open: {uri}") from None

    def get_open(self, uri: str) -> Document | None:
        """The open document at ``uri``, or None."""
        return self._docs.get(uri)

    def mark_used(self, uri: str) -> None:
        """Activity on a document: iteration yields the least recently used first."""
        doc = self._docs.pop(uri, None)
        if doc is not None:
            self._docs[uri] = doc

    def close(self, uri: str) -> None:
        """Forget a document."""
        self._docs.pop(uri, None)

    def __iter__(self):  # type: ignore[no-untyped-def]
        """The documents, least recently used first (see :meth:`mark_used`)."""
        return iter(list(self._docs.values()))

    def __len__(self) -> int:
        return len(self._docs)
