"""smallcode: build, measure and run small sparse code models locally.

Each subpackage holds one concern (the README's Layout section and docs/architecture.md list them),
and imports point one way, from the leaves up:

* leaves: ``errors`` (``UserError``), ``fileio`` (atomic writes, JSONL), ``config``, ``tasks``,
  ``corpus`` (source files, the standard-library walker);
* building blocks: ``tokenizer``, ``model``, ``data``, ``sandbox``, ``export``;
* the inference core: ``runtime`` (engine, scheduler, prompt formats, the model-step protocol and
  its torch, ONNX Runtime and transformers implementations), and ``client`` above it (in process
  or HTTP);
* consumers: ``train``, ``backends`` and ``eval``, ``serve``, ``lsp``, ``agent``;
* on top: ``pipeline`` (the main job), ``demo`` and ``cli``.

``tests/test_layering.py`` holds the exact rules. Importing the top-level package imports nothing heavy.
"""

__version__ = "0.1.0"
