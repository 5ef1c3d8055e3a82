;;; pie-lsp.el --- pie-lsp with Eglot  -*- lexical-binding: t; -*-

;; Load this file from your init (or copy the form below).  Eglot offers pie-lsp's
;; suggestions through completion-at-point (textDocument/completion).
;; Start it in a buffer with M-x eglot.

(require 'eglot)

(defvar pie-lsp-command "pie-lsp"
  "The pie-lsp executable, e.g. \"/path/to/pie-lsp/.venv/bin/pie-lsp\".")

(add-to-list 'eglot-server-programs
             `((python-mode python-ts-mode rust-mode rust-ts-mode go-mode go-ts-mode
                js-mode js-ts-mode typescript-ts-mode)
               . (,pie-lsp-command "serve"
                  :initializationOptions
                  (:model "default"
                   :completion (:maxTokens 48 :multiline "never")
                   :cache (:strategy "pie")))))

(provide 'pie-lsp)
;;; pie-lsp.el ends here
