"""``python -m lsp_server``: the same as the ``pie-lsp`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
