"""Tooling around the server: benchmarks, the demo, an LSP test client, a Neovim driver.

``pie-lsp bench ...`` and ``pie-lsp demo`` dispatch here (``lsp_server.cli`` imports
these modules when the command runs). Tooling may import ``lsp_server``, ``completion``
and ``cache``; none of them imports tooling at module level.
"""
