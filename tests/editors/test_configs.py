"""The editor configurations we ship parse, and their settings are valid server settings."""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from lsp_server.config import parse_config

EDITORS = Path(__file__).resolve().parents[2] / "editors"


def test_helix_languages_toml() -> None:
    data = tomllib.loads((EDITORS / "helix" / "languages.toml").read_text(encoding="utf-8"))
    server = data["language-server"]["pie-lsp"]
    assert server["command"] == "pie-lsp" and server["args"] == ["serve"]
    _, problems = parse_config(server["config"])
    assert problems == []
    assert all("pie-lsp" in lang["language-servers"] for lang in data["language"])


def test_sublime_lsp_settings() -> None:
    data = json.loads((EDITORS / "sublime" / "LSP.sublime-settings").read_text(encoding="utf-8"))
    client = data["clients"]["pie-lsp"]
    assert client["command"] == ["pie-lsp", "serve"]
    _, problems = parse_config(client["initializationOptions"])
    assert problems == []


def _balanced(text: str) -> bool:
    depth, in_string, escaped = 0, False, False
    for line in text.splitlines():
        for ch in line.split(";", 1)[0] if not in_string else line:
            if in_string:
                escaped = ch == "\\" and not escaped
                if ch == '"' and not escaped:
                    in_string = False
            elif ch == '"':
                in_string = True
            elif ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
                if depth < 0:
                    return False
    return depth == 0 and not in_string


def test_emacs_eglot_form_is_balanced() -> None:
    assert _balanced((EDITORS / "emacs" / "pie-lsp.el").read_text(encoding="utf-8"))


@pytest.mark.skipif(shutil.which("emacs") is None, reason="no emacs here")
def test_emacs_eglot_loads_and_options_are_valid() -> None:
    script = """
(progn
  (require 'json)
  (require 'seq)
  ;; Emacs 29+ ships Eglot; on older ones (no ELPA here) stand in for its variable.
  (unless (locate-library "eglot")
    (defvar eglot-server-programs nil)
    (provide 'eglot))
  (load-file (car command-line-args-left))
  (let* ((entry (seq-find (lambda (e) (and (consp (cdr e)) (equal (cadr e) pie-lsp-command)))
                          eglot-server-programs))
         (options (plist-get (cdddr entry) :initializationOptions)))
    (princ (json-encode options))))
"""
    out = subprocess.run(
        ["emacs", "--batch", "-Q", "--eval", script, str(EDITORS / "emacs" / "pie-lsp.el")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    options = json.loads(out.stdout.strip().splitlines()[-1])
    assert options["completion"]["maxTokens"] == 48
    _, problems = parse_config(options)
    assert problems == []


def test_zed_extension_manifest_and_settings() -> None:
    manifest = tomllib.loads((EDITORS / "zed" / "extension.toml").read_text(encoding="utf-8"))
    assert manifest["id"] == "pie-lsp"
    assert "Python" in manifest["language_servers"]["pie-lsp"]["languages"]
    settings = json.loads((EDITORS / "zed" / "settings.json").read_text(encoding="utf-8"))
    server = settings["lsp"]["pie-lsp"]
    assert server["binary"]["arguments"] == ["serve"]
    _, problems = parse_config(server["initialization_options"])
    assert problems == []
