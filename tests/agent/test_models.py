"""A local checkpoint as the agent's model: prompts through the tokenizer's chat template, the run
ends by its budget whatever the (random) model says."""

from __future__ import annotations

from pathlib import Path

import pytest

from factories import make_model  # noqa: E402
from smallcode.agent import AgentConfig, EngineChat, Workspace, open_chat_model, run_agent
from smallcode.model.checkpoint import save_checkpoint
from smallcode.runtime.formats import prompt_format
from smallcode.tokenizer import CodeTokenizer


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: CodeTokenizer) -> Path:
    out = tmp_path_factory.mktemp("agent-ckpt")
    tok = tiny_tokenizer.save(out / "tok")
    return save_checkpoint(make_model(), out / "ck", tokenizer_file=tok)


def test_engine_chat_uses_the_chat_template(checkpoint: Path) -> None:
    chat = open_chat_model(checkpoint)
    assert isinstance(chat, EngineChat)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    replies = chat.chat(messages, n=2, temperature=0.0, max_tokens=8, seed=0)
    expected = prompt_format(chat.engine.tokenizer).chat(messages)
    assert replies[0].prompt_tokens == len(expected)
    assert replies[0].text == replies[1].text and replies[0].completion_tokens <= 8


def test_a_random_model_ends_by_budget(checkpoint: Path, repo: Path) -> None:
    with Workspace(repo) as ws:
        result = run_agent("fix add", ws, open_chat_model(checkpoint), AgentConfig(max_steps=2, reply_tokens=16),
                           "python -B tests/test_calc.py")
    assert result.exit_reason in ("max_steps", "model_error") and result.steps <= 2


def test_open_chat_model_needs_one_source() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        open_chat_model()
    with pytest.raises(ValueError, match="http"):
        open_chat_model(endpoint="localhost:8080")


def test_a_speculating_engine_chat_replies_as_the_plain_one(checkpoint: Path) -> None:
    """The agent's local model with prompt lookup: the same greedy replies, guesses checked."""
    messages = [{"role": "user", "content": "def add(a, b):\n    return a + b\n\nwrite add again"}]
    plain = open_chat_model(checkpoint).chat(messages, max_tokens=48)[0].text
    chat = open_chat_model(checkpoint, speculate="ngram")
    assert chat.chat(messages, max_tokens=48)[0].text == plain  # type: ignore[attr-defined]
    assert chat.engine.spec_stats.proposed > 0  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="--speculate is for a local --model"):
        open_chat_model(endpoint="http://127.0.0.1:9", speculate="ngram")
