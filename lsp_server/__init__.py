"""pie-lsp: the LSP protocol layer."""

__version__ = "0.1.0"
