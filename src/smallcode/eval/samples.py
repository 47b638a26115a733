"""A model's completions of a few fixed prompts, and whether they loop: the recipe report's last look.

A small model that has learnt little repeats itself: the same line over and over, or one word. The
distinct-n ratio (Li et al., 2016: distinct n-grams over all n-grams of a text) of a completion
catches that whatever the language; ``distinct_ngram_ratio`` counts it over the completion's words
and punctuation marks (an identifier or number is one word, every other non-blank character one mark,
so ``))))`` is four of them), so a loop of one short line or one character scores near 0 and
ordinary code near 1.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from smallcode.runtime.engine import Engine
    from smallcode.runtime.sampling import SamplingParams

# Fixed prompts: a function to write from a signature, a docstring, a class, code in the middle of
# a module. None of them is a task of the evaluation suites.
PROMPTS: tuple[str, ...] = (
    "def fibonacci(n):\n",
    "import os\n\n\ndef list_python_files(root):\n    \"\"\"Return the paths of the .py files under root.\"\"\"\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n",
    "def parse_args(argv=None):\n    parser = argparse.ArgumentParser(description=\"Copy files.\")\n",
    "def read_json(path):\n    with open(path) as f:\n",
    "def is_prime(n):\n    \"\"\"Return True if n is a prime number.\"\"\"\n",
)


_WORDS = re.compile(r"\w+|[^\w\s]")


def distinct_ngram_ratio(text: str, n: int = 4) -> float:
    """Distinct n-grams of words and marks over all of them in ``text``; 1.0 when it has fewer than n."""
    words = _WORDS.findall(text)
    grams = [tuple(words[i: i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


@dataclass(frozen=True)
class Sample:
    prompt: str
    completion: str
    distinct_4: float


def sample_prompts(engine: Engine, params: SamplingParams, prompts: Sequence[str] = PROMPTS) -> list[Sample]:
    """One completion of each prompt under ``params``, with its distinct-4 ratio."""
    out = []
    for prompt in prompts:
        text = engine.generate(prompt, params)[0].text
        out.append(Sample(prompt, text, distinct_ngram_ratio(text)))
    return out


def mean_distinct(samples: Sequence[Sample]) -> float:
    return sum(s.distinct_4 for s in samples) / max(1, len(samples))
