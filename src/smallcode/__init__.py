"""smallcode: build, measure and run small sparse code models locally.

Subpackages each hold one concern (see DESIGN.md in the repository): ``model``, ``tokenizer``,
``data``, ``train``, ``infer``, ``export``, ``eval``, ``backends``, ``serve``, ``agent`` and ``cli``.
Importing the top-level package imports nothing heavy.
"""

__version__ = "0.1.0"
