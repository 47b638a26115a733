"""The configuration of a smallcode model, for transformers (``AutoConfig`` with ``trust_remote_code``).

Field names are smallcode's own (``smallcode.model.config.ModelConfig``) but two: the router's
``top_k`` is ``num_experts_per_tok`` (Mixtral's name), because transformers reads a config's
``top_k`` as a sampling option, and ``rope_scaling`` is ``rope_scaling_type``, because transformers
takes a config's ``rope_scaling`` for its own ``rope_parameters``. ``attribute_map`` gives
transformers the standard names it reads (``hidden_size``, ``num_hidden_layers``, ...).
Training-only fields (loss coefficients, initialisation) are not part of an export.
"""

from transformers import PretrainedConfig


class SmallCodeConfig(PretrainedConfig):
    model_type = "smallcode"
    attribute_map = {
        "hidden_size": "d_model",
        "num_hidden_layers": "n_layers",
        "num_attention_heads": "n_heads",
        "num_key_value_heads": "n_kv_heads",
        "intermediate_size": "d_ff",
        "max_position_embeddings": "max_seq_len",
    }

    def __init__(
        self,
        vocab_size: int = 256,
        d_model: int = 64,
        n_layers: int = 2,
        n_heads: int = 4,
        n_kv_heads: int = 2,
        head_dim: int | None = None,
        d_ff: int = 96,
        n_experts: int = 4,
        num_experts_per_tok: int = 2,
        window: int = 16,
        n_global: int = 2,
        rope_base: float = 10000.0,
        max_seq_len: int = 128,
        norm_eps: float = 1e-5,
        qkv_bias: bool = False,
        out_bias: bool = False,
        rope_scaling_type: str = "none",
        rope_factor: float = 1.0,
        rope_low_freq_factor: float = 1.0,
        rope_high_freq_factor: float = 4.0,
        rope_original_max_len: int = 8192,
        use_cache: bool = True,
        **kwargs,
    ) -> None:
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads
        self.head_dim = head_dim if head_dim is not None else d_model // n_heads
        self.d_ff = d_ff
        self.n_experts = n_experts  # 1: a dense SwiGLU feed-forward, no router
        self.num_experts_per_tok = num_experts_per_tok
        self.window = window  # a query sees itself and the window - 1 positions before it ...
        self.n_global = n_global  # ... and the first n_global positions of its sequence
        self.rope_base = rope_base
        self.max_seq_len = max_seq_len
        self.norm_eps = norm_eps
        self.qkv_bias = qkv_bias  # the fused q/k/v projection has a bias (rows q | k | v, like its weight)
        self.out_bias = out_bias  # the attention output projection has a bias
        self.rope_scaling_type = rope_scaling_type  # "none", "linear" or "llama3" (see modeling's rope_inv_freq)
        self.rope_factor = rope_factor
        self.rope_low_freq_factor = rope_low_freq_factor
        self.rope_high_freq_factor = rope_high_freq_factor
        self.rope_original_max_len = rope_original_max_len
        self.use_cache = use_cache
        super().__init__(**kwargs)
