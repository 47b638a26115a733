"""The language server behind ``smallcode lsp``: inline completion from a local model in any LSP editor.

``server`` (pygls: features, supersession, errors), ``context`` (the prompt's pieces), ``postprocess``
(what a completion may show), ``models`` (the engine in process, or a completion server over HTTP),
``debounce`` (when a request goes to the model), ``feedback`` (the local log behind ``smallcode stats``).
pygls is imported only by ``server``.
"""
