"""The architecture of a decoder-only language model (GPT-2 or Llama family) as one frozen dataclass.

Every field names the Hugging Face config key it comes from (``GPT2Config`` / ``LlamaConfig``), so
:meth:`ModelConfig.from_hf_config` is a table lookup and a checkpoint's ``config.json`` fully decides the model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

FAMILIES = ("gpt2", "llama")
ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh", "gelu", "silu", "relu")
ROPE_TYPES = ("default", "llama3")
SUPPORTED_ARCHITECTURES = {"gpt2": ("GPT2LMHeadModel",), "llama": ("LlamaForCausalLM",)}

# Model presets: the paper's recipes' architectures by Hugging Face id (their config.json fields), so a run can
# be planned for ``teacher.path=gpt2-xl`` without weights or network
# (``ModelConfig.from_hf_config(KNOWN_HF_CONFIGS[id])``).
KNOWN_HF_CONFIGS = {
    "gpt2": {"model_type": "gpt2", "n_embd": 768, "n_head": 12, "n_layer": 12, "n_positions": 1024,
             "vocab_size": 50257},
    "gpt2-medium": {"model_type": "gpt2", "n_embd": 1024, "n_head": 16, "n_layer": 24, "n_positions": 1024,
                    "vocab_size": 50257},
    "gpt2-xl": {"model_type": "gpt2", "n_embd": 1600, "n_head": 25, "n_layer": 48, "n_positions": 1024,
                "vocab_size": 50257},
    "huggyllama/llama-7b": {"model_type": "llama", "hidden_size": 4096, "num_attention_heads": 32,
                            "num_hidden_layers": 32, "intermediate_size": 11008, "vocab_size": 32000,
                            "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "tie_word_embeddings": False},
    "TinyLlama/TinyLlama_v1.1": {"model_type": "llama", "hidden_size": 2048, "num_attention_heads": 32,
                                 "num_key_value_heads": 4, "num_hidden_layers": 22, "intermediate_size": 5632,
                                 "vocab_size": 32000, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5,
                                 "tie_word_embeddings": False},
}
KNOWN_HF_CONFIGS["openai-community/gpt2"] = KNOWN_HF_CONFIGS["gpt2"]
KNOWN_HF_CONFIGS["openai-community/gpt2-medium"] = KNOWN_HF_CONFIGS["gpt2-medium"]
KNOWN_HF_CONFIGS["openai-community/gpt2-xl"] = KNOWN_HF_CONFIGS["gpt2-xl"]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture hyper-parameters; GPT-2 key / Llama key in the comments.

  Raises:
    ValueError: from ``__post_init__`` on an unknown family, activation or RoPE type, or inconsistent head counts.
  """

  family: Literal["gpt2", "llama"]  # model_type
  vocab_size: int  # vocab_size
  hidden_size: int  # n_embd / hidden_size
  num_layers: int  # n_layer / num_hidden_layers
  num_heads: int  # n_head / num_attention_heads
  num_kv_heads: int  # (= n_head) / num_key_value_heads
  head_dim: int  # (n_embd // n_head) / head_dim (default hidden_size // num_attention_heads)
  intermediate_size: int  # n_inner (None -> 4 * n_embd) / intermediate_size
  max_position_embeddings: int  # n_positions / max_position_embeddings
  norm_eps: float  # layer_norm_epsilon / rms_norm_eps
  activation: str  # activation_function / hidden_act
  tie_word_embeddings: bool = True  # tie_word_embeddings
  attention_bias: bool = False  # (always True) / attention_bias
  mlp_bias: bool = False  # (always True) / mlp_bias
  rope_theta: float = 10_000.0  # (none) / rope_parameters["rope_theta"] (v4: rope_theta)
  rope_type: str = "default"  # (none) / rope_parameters["rope_type"] (v4: rope_scaling["rope_type"])
  rope_factor: float = 1.0  # (none) / rope_parameters["factor"]  (llama3 only)
  rope_low_freq_factor: float = 1.0  # (none) / rope_parameters["low_freq_factor"]  (llama3 only)
  rope_high_freq_factor: float = 4.0  # (none) / rope_parameters["high_freq_factor"]  (llama3 only)
  rope_original_max_position_embeddings: int = 8192  # (none) / rope_parameters["original_max_position_embeddings"]
  initializer_range: float = 0.02  # initializer_range (std of the random init)

  def __post_init__(self):
    if self.family not in FAMILIES:
      raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
    if self.rope_type not in ROPE_TYPES:
      raise ValueError(f"rope_type must be one of {ROPE_TYPES}, got {self.rope_type!r}")
    for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                 "intermediate_size", "max_position_embeddings"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}")
    if self.family == "gpt2" and (self.num_kv_heads != self.num_heads
                                  or self.num_heads * self.head_dim != self.hidden_size):
      raise ValueError("gpt2 needs num_kv_heads == num_heads and num_heads * head_dim == hidden_size, got "
                       f"{self.num_heads=}, {self.num_kv_heads=}, {self.head_dim=}, {self.hidden_size=}")

  @classmethod
  def from_hf_config(cls, hf: Mapping[str, Any]) -> ModelConfig:
    """The config of a Hugging Face ``config.json`` dict (``GPT2Config`` or ``LlamaConfig``).

    Args:
      hf: the parsed ``config.json`` (or ``PretrainedConfig.to_dict()``).

    Returns:
      The matching :class:`ModelConfig`.

    Raises:
      ValueError: on a ``model_type`` or ``architectures`` entry other than GPT-2 / Llama causal LMs (naming
        them), or on options this implementation does not compute (named).
    """
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_ARCHITECTURES:
      raise ValueError(f"unsupported model_type {model_type!r} (architectures={hf.get('architectures')}); "
                       f"supported: {SUPPORTED_ARCHITECTURES}")
    unsupported = [a for a in hf.get("architectures") or () if a not in SUPPORTED_ARCHITECTURES[model_type]]
    if unsupported:
      raise ValueError(f"unsupported architectures {unsupported} for model_type {model_type!r}; "
                       f"supported: {SUPPORTED_ARCHITECTURES[model_type]}")
    return _from_gpt2(hf) if model_type == "gpt2" else _from_llama(hf)

  def to_hf_config(self) -> dict[str, Any]:
    """The Hugging Face ``config.json`` dict of this architecture (the inverse of :meth:`from_hf_config`).

    ``GPT2LMHeadModel`` or ``LlamaForCausalLM`` fields only (no token ids, no dtype: the exporter adds them);
    ``ModelConfig.from_hf_config(cfg.to_hf_config()) == cfg``. Llama's RoPE settings are written both as
    transformers 5's ``rope_parameters`` and as v4's ``rope_theta`` / ``rope_scaling``.
    """
    if self.family == "gpt2":
      return {"architectures": list(SUPPORTED_ARCHITECTURES["gpt2"]), "model_type": "gpt2",
              "vocab_size": self.vocab_size, "n_embd": self.hidden_size, "n_layer": self.num_layers,
              "n_head": self.num_heads, "n_inner": self.intermediate_size, "n_positions": self.max_position_embeddings,
              "layer_norm_epsilon": self.norm_eps, "activation_function": self.activation,
              "tie_word_embeddings": self.tie_word_embeddings, "initializer_range": self.initializer_range}
    rope = {"rope_theta": self.rope_theta, "rope_type": self.rope_type}
    if self.rope_type == "llama3":
      rope.update(factor=self.rope_factor, low_freq_factor=self.rope_low_freq_factor,
                  high_freq_factor=self.rope_high_freq_factor,
                  original_max_position_embeddings=self.rope_original_max_position_embeddings)
    return {"architectures": list(SUPPORTED_ARCHITECTURES["llama"]), "model_type": "llama",
            "vocab_size": self.vocab_size, "hidden_size": self.hidden_size, "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads, "num_key_value_heads": self.num_kv_heads, "head_dim": self.head_dim,
            "intermediate_size": self.intermediate_size, "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.norm_eps, "hidden_act": self.activation, "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.attention_bias, "mlp_bias": self.mlp_bias, "rope_parameters": rope,
            "rope_theta": self.rope_theta, "rope_scaling": None if self.rope_type == "default" else dict(rope),
            "initializer_range": self.initializer_range}

  @classmethod
  def gpt2_small(cls) -> ModelConfig:
    """GPT-2 small (124M): 12 layers, 768 hidden, 12 heads, vocab 50257, context 1024."""
    return cls(family="gpt2", vocab_size=50257, hidden_size=768, num_layers=12, num_heads=12, num_kv_heads=12,
               head_dim=64, intermediate_size=3072, max_position_embeddings=1024, norm_eps=1e-5,
               activation="gelu_new", tie_word_embeddings=True, attention_bias=True, mlp_bias=True)

  @classmethod
  def smollm2_135m(cls) -> ModelConfig:
    """SmolLM2-135M (Llama): 30 layers, 576 hidden, 9 heads / 3 KV heads, FFN 1536, vocab 49152, tied."""
    return cls(family="llama", vocab_size=49152, hidden_size=576, num_layers=30, num_heads=9, num_kv_heads=3,
               head_dim=64, intermediate_size=1536, max_position_embeddings=8192, norm_eps=1e-5,
               activation="silu", tie_word_embeddings=True, rope_theta=100_000.0, initializer_range=1 / 24)


def _from_gpt2(hf: Mapping[str, Any]) -> ModelConfig:
  if hf.get("scale_attn_by_inverse_layer_idx", False) or not hf.get("scale_attn_weights", True):
    raise ValueError("unsupported GPT-2 options: scale_attn_by_inverse_layer_idx=True or scale_attn_weights=False")
  d, heads = hf["n_embd"], hf["n_head"]
  return ModelConfig(
      family="gpt2", vocab_size=hf["vocab_size"], hidden_size=d, num_layers=hf["n_layer"], num_heads=heads,
      num_kv_heads=heads, head_dim=d // heads, intermediate_size=hf.get("n_inner") or 4 * d,
      max_position_embeddings=hf["n_positions"], norm_eps=hf.get("layer_norm_epsilon", 1e-5),
      activation=hf.get("activation_function", "gelu_new"), tie_word_embeddings=hf.get("tie_word_embeddings", True),
      attention_bias=True, mlp_bias=True, initializer_range=hf.get("initializer_range", 0.02))


def _from_llama(hf: Mapping[str, Any]) -> ModelConfig:
  rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  heads = hf["num_attention_heads"]
  extra = {}
  if rope_type == "llama3":
    extra = dict(rope_factor=rope["factor"], rope_low_freq_factor=rope["low_freq_factor"],
                 rope_high_freq_factor=rope["high_freq_factor"],
                 rope_original_max_position_embeddings=rope["original_max_position_embeddings"])
  return ModelConfig(
      family="llama", vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
      num_layers=hf["num_hidden_layers"], num_heads=heads, num_kv_heads=hf.get("num_key_value_heads") or heads,
      head_dim=hf.get("head_dim") or hf["hidden_size"] // heads, intermediate_size=hf["intermediate_size"],
      max_position_embeddings=hf["max_position_embeddings"], norm_eps=hf.get("rms_norm_eps", 1e-6),
      activation=hf.get("hidden_act", "silu"), tie_word_embeddings=hf.get("tie_word_embeddings", False),
      attention_bias=hf.get("attention_bias", False), mlp_bias=hf.get("mlp_bias", False),
      rope_theta=rope.get("rope_theta", hf.get("rope_theta", 10_000.0)), rope_type=rope_type,
      initializer_range=hf.get("initializer_range", 0.02), **extra)
