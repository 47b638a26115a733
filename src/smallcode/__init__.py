"""smallcode: build, measure and run small sparse code models locally.

Each subpackage holds one concern (the README's Layout section lists them): ``model``,
``tokenizer``, ``data``, ``tasks``, ``train``, ``infer``, ``export``, ``eval``, ``backends`` and
``cli``, with ``corpus``, ``config`` and ``fileio`` as leaf modules. Importing the top-level
package imports nothing heavy.
"""

__version__ = "0.1.0"
