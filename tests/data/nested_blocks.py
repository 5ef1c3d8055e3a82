"""Nested blocks for the syntax judge's windows. 漢字 🐍"""

import functools


class Shelf:
    """Books 📚 on a shelf."""

    LABELS = {"zh": "书架", "emoji": "📚"}

    def __init__(self, books: list[str]) -> None:
        self.books = list(books)

    @functools.cached_property
    def titles(self) -> list[str]:
        out = []
        for book in self.books:
            if book.startswith("漢"):
                out.append(book.upper())
            elif book:
                out.append(
                    book.title(),
                )
            else:
                continue
        return out

    def load(self, path: str) -> int:
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc}") from exc
        finally:
            self.loaded = True
        help_text = """Usage:
  shelf load PATH
    reads one title per line 🙂
"""
        count = 0
        while count < len(text):
            match text[count]:
                case "\n":
                    count += 1
                case _:
                    count += 2
        return count + len(help_text)


def outer(values: list[int]) -> int:
    def inner(v: int) -> int:
        if v > 0:
            return v
        return -v

    total = 0
    for v in values:
        total += inner(v)
    return total
