"""A Hugging Face model directory as a backend (transformers is imported only when one is built).

Loads ``AutoTokenizer`` and ``AutoModelForCausalLM`` from a local directory (never the hub:
``local_files_only``), continues each prompt, keeps only the new tokens, and cuts them at the stop
sequences. Temperature 0 means greedy decoding. Not here: batching across prompts (one prompt at
a time keeps padding out of the picture), quantisation, device placement beyond CPU/one GPU.
"""

from __future__ import annotations

from pathlib import Path

from smallcode.backends.base import BackendError, truncate_at_stop


class HFBackend:
    def __init__(self, model_dir: str | Path, device: str | None = None, dtype: str = "auto") -> None:
        from smallcode.model.checkpoint import CheckpointError, model_directory_kind

        path = Path(model_dir)
        try:
            kind = model_directory_kind(path)
        except CheckpointError as e:
            raise BackendError(f"{path}: not a Hugging Face model directory ({e})") from e
        if kind != "huggingface":
            raise BackendError(f"{path}: not a Hugging Face model directory (a smallcode checkpoint)")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from smallcode.export.hf import trusted_remote_code

        self.name = f"hf:{path}"
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        trust = trusted_remote_code(path)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust)
            self.model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, torch_dtype=dtype,
                                                              trust_remote_code=trust)
        except (OSError, ValueError) as e:
            raise BackendError(f"{path}: cannot load the model ({e})") from e
        self.model.to(self.device).eval()
        self._torch = torch

    def generate(
        self, prompts: list[str], n: int, temperature: float, top_p: float, max_tokens: int, stop: list[str]
    ) -> list[list[str]]:
        torch = self._torch
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        results: list[list[str]] = []
        for prompt in prompts:
            ids = self.tokenizer(prompt, return_tensors="pt").input_ids.to(self.device)
            sample = temperature > 0
            kwargs = {
                "do_sample": sample,
                "max_new_tokens": max_tokens,
                "num_return_sequences": n,
                "pad_token_id": pad,
            }
            if sample:
                kwargs.update(temperature=temperature, top_p=top_p)
            with torch.no_grad():
                if not sample and n > 1:
                    # Greedy decoding is deterministic: decode once and repeat.
                    out = self.model.generate(
                        ids, attention_mask=torch.ones_like(ids), **{**kwargs, "num_return_sequences": 1}
                    )
                    out = out.repeat(n, 1)
                else:
                    out = self.model.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)
            new = out[:, ids.shape[1] :]
            texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
            results.append([truncate_at_stop(t, stop) for t in texts])
        return results
