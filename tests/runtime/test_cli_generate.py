from __future__ import annotations

import pytest

from factories import make_model  # type: ignore[import-not-found]
from smallcode.cli.main import main as cli_main
from smallcode.model.checkpoint import save_checkpoint
from smallcode.runtime import Engine, SamplingParams
from smallcode.runtime.formats import prompt_format
from smallcode.runtime.sampling import GENERATE_DEFAULTS


@pytest.fixture
def ckpt(tmp_path, infer_tokenizer):
    tok = infer_tokenizer.save(tmp_path / "tok")
    return save_checkpoint(make_model(), tmp_path / "ck", tokenizer_file=tok)


def test_generate_streams_the_engine_text(ckpt, capsys) -> None:
    engine = Engine.from_checkpoint(ckpt)
    assert cli_main(["generate", str(ckpt), "import json\n", "--max-tokens", "12", "--temperature", "0"]) == 0
    assert capsys.readouterr().out == engine.generate("import json\n", SamplingParams(max_tokens=12))[0].text + "\n"
    # without sampling options: generate's own defaults (sampled), not the API's greedy
    assert GENERATE_DEFAULTS.temperature > 0
    assert cli_main(["generate", str(ckpt), "import json\n", "--max-tokens", "12", "--seed", "3"]) == 0
    sampled = engine.generate("import json\n", GENERATE_DEFAULTS.replace(max_tokens=12, seed=3))[0].text
    assert capsys.readouterr().out == sampled + "\n"


def test_complete_fills_the_middle(ckpt, tmp_path, capsys) -> None:
    (tmp_path / "p.py").write_text("def f(x):\n    return ")
    (tmp_path / "s.py").write_text("\n\nprint(f(1))\n")
    assert cli_main(["complete", str(ckpt), "--prefix-file", str(tmp_path / "p.py"),
                     "--suffix-file", str(tmp_path / "s.py"), "--max-tokens", "6", "--temperature", "0"]) == 0
    engine = Engine.from_checkpoint(ckpt)
    expected = engine.complete("def f(x):\n    return ", "\n\nprint(f(1))\n", SamplingParams(max_tokens=6))[0].text
    assert capsys.readouterr().out == expected + "\n"


def test_complete_sends_the_servers_fim_prompt(ckpt, tmp_path, capsys, monkeypatch) -> None:
    prefix, suffix = "def f(x):\n    return ", "\n\nprint(f(1))\n"
    (tmp_path / "p.py").write_text(prefix)
    (tmp_path / "s.py").write_text(suffix)
    seen: list[list[list[int]]] = []
    generate_ids = Engine.generate_ids

    def spy(self: Engine, ids: list[list[int]], *args: object, **kwargs: object) -> list:
        seen.append(ids)
        return generate_ids(self, ids, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Engine, "generate_ids", spy)
    assert cli_main(["complete", str(ckpt), "--prefix-file", str(tmp_path / "p.py"),
                     "--suffix-file", str(tmp_path / "s.py"), "--max-tokens", "2"]) == 0
    tokenizer = Engine.from_checkpoint(ckpt).tokenizer
    assert seen == [[prompt_format(tokenizer).fim(prefix, suffix)]]  # the layout the server and the LSP send


@pytest.mark.parametrize(("args", "message", "code"), [
    (["", "--max-tokens", "4"], "empty prompt", 1),  # the engine refuses it: a user error
    (["x", "--max-tokens", "0"], "max_tokens", 2),  # a bad option value: a usage error, as click's own
    (["x", "--top-p", "1.5"], "top_p", 2),
])
def test_bad_requests_print_one_line(ckpt, capsys, args: list[str], message: str, code: int) -> None:
    assert cli_main(["generate", str(ckpt), *args]) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_checkpoint(tmp_path, capsys) -> None:
    assert cli_main(["generate", str(tmp_path / "nope"), "x"]) == 1
    assert "not a checkpoint directory" in capsys.readouterr().err


def test_sampling_options_are_the_sampling_params_fields() -> None:
    import dataclasses

    import click

    from smallcode.cli.generate import complete, generate

    docs = SamplingParams.field_docs()
    for command in (generate, complete):
        options = {p.name: p for p in command.params if isinstance(p, click.Option)}
        for f in dataclasses.fields(SamplingParams):
            if f.name == "ignore_eos":  # a benchmark switch, not a user's option
                assert f.name not in options
                continue
            assert options[f.name].help == docs[f.name], f.name


def test_stop_sequences_reach_the_engine(ckpt, capsys) -> None:
    engine = Engine.from_checkpoint(ckpt)
    full = engine.generate("import json\n", SamplingParams(max_tokens=12))[0].text
    # two characters from the middle that need no escaping on a command line (no blanks, commas, backslashes)
    stop = next(full[i:i + 2] for i in range(len(full) // 2, len(full) - 1)
                if not any(c.isspace() or c in ",\\" for c in full[i:i + 2]))
    assert cli_main(["generate", str(ckpt), "import json\n", "--max-tokens", "12", "--stop", stop,
                     "--temperature", "0"]) == 0
    expected = engine.generate("import json\n", SamplingParams(max_tokens=12, stop=[stop]))[0].text
    assert capsys.readouterr().out == expected + "\n" and len(expected) < len(full)


def test_speculating_commands_print_the_plain_text(ckpt, tmp_path, capsys) -> None:
    """--speculate ngram and a draft (the model itself) change nothing in greedy text."""
    engine = Engine.from_checkpoint(ckpt)
    prompt = "import json\nimport os\nimport json\n"
    want = engine.generate(prompt, SamplingParams(max_tokens=40))[0].text + "\n"
    for spec in (["--speculate", "ngram", "--speculate-k", "3"], ["--speculate", f"draft:{ckpt}"]):
        assert cli_main(["generate", str(ckpt), prompt, "--max-tokens", "40", "--temperature", "0", *spec]) == 0
        assert capsys.readouterr().out == want


@pytest.mark.parametrize(("spec", "message", "code"), [
    (["--speculate", "ngram", "--speculate-k", "0"], "k must be an integer in [1, 16]", 2),
    (["--speculate", "ngram", "--speculate-k", "17"], "k must be an integer in [1, 16]", 2),
    (["--speculate", "medusa"], "'ngram' or 'draft:DIR'", 2),
    (["--speculate", "draft:"], "'ngram' or 'draft:DIR'", 2),
])
def test_bad_speculation_is_a_usage_error(ckpt, capsys, spec: list[str], message: str, code: int) -> None:
    assert cli_main(["generate", str(ckpt), "x", *spec]) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_draft_with_another_tokenizer_is_one_line(ckpt, tmp_path, capsys) -> None:
    from factories import STDLIB, TOKENIZER_VOCAB  # type: ignore[import-not-found]
    from smallcode.tokenizer import load_tokenizer, train_tokenizer

    train_tokenizer([STDLIB / "email"], TOKENIZER_VOCAB, tmp_path / "other", show_progress=False)
    tok = load_tokenizer(tmp_path / "other").save(tmp_path / "other-file")
    other = save_checkpoint(make_model(), tmp_path / "other-ck", tokenizer_file=tok)
    assert cli_main(["generate", str(ckpt), "x", "--speculate", f"draft:{other}"]) == 1
    err = capsys.readouterr().err
    assert "the draft has another tokenizer" in err and str(other) in err and "Traceback" not in err
