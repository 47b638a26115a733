"""Exports of a smallcode model to other runtimes (Hugging Face, ONNX).

What both exports share lives here: their error, and the checks of a checkpoint and a destination
made before any work (``check_destination``); and the names of an ONNX export's files, which the
runtime (``smallcode.runtime.onnx``) reads: exports sit below the runtime, so it imports them from here.
"""

from __future__ import annotations

from pathlib import Path

from smallcode.errors import UserError

ONNX_CONFIG_FILE = "smallcode_onnx.json"
"""An ONNX export's config (model config, tokenizer hash, graph inputs and outputs); its presence marks one."""
ONNX_MODEL_FILE = "model.onnx"
ONNX_FORMAT_VERSION = 1
"""Of ``ONNX_CONFIG_FILE`` and the graph's interface; a reader refuses any other."""


class ExportError(UserError, ValueError):
    """An export refused before any work; the message says why (one line)."""


def check_destination(checkpoint: Path, out: Path, force: bool) -> None:
    """Refuse a source that is not a checkpoint, and a destination that is the checkpoint, a file, or a
    non-empty directory (unless ``force``: it is then replaced, never merged into)."""
    from smallcode.model.checkpoint import WEIGHTS_FILE, Checkpoint, CheckpointError, model_directory_kind

    try:  # the config is read whole here, so a corrupt one is named before any work
        if model_directory_kind(checkpoint) == "huggingface":
            raise ExportError(f"{checkpoint}: not a smallcode checkpoint (a Hugging Face model directory; "
                              "export takes a smallcode checkpoint)")
        Checkpoint.open(checkpoint)
    except CheckpointError as e:
        raise ExportError(f"not a smallcode checkpoint: {e}") from e
    if not (checkpoint / WEIGHTS_FILE).is_file():
        raise ExportError(f"{checkpoint}: not a smallcode checkpoint ({WEIGHTS_FILE} missing)")
    if out.resolve() == checkpoint.resolve():
        raise ExportError(f"{out}: is the checkpoint itself; write the export to another directory")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ExportError(f"{out}: exists and is not empty (use --force to replace it)")
