"""Flax NNX GPT-2 and Llama models exposing every layer: HF loading, KV-cache generation, students, sharding."""

from jaxlens.models.base import CausalLM, KVCache, ModelOutput, default_positions
from jaxlens.models.build import MODEL_CLASSES, build_model, num_params
from jaxlens.models.config import KNOWN_HF_CONFIGS, ModelConfig
from jaxlens.models.generate import generate
from jaxlens.models.gguf import GGUFCheckpoint, clear_gguf_cache, load_gguf, read_gguf, smollm2_path
from jaxlens.models.gpt2 import GPT2
from jaxlens.models.hf_weights import from_pretrained, load_state_dict, read_safetensors, to_state_dict
from jaxlens.models.layers import REMAT_POLICIES, RematPolicy
from jaxlens.models.llama import Llama
from jaxlens.models.sharding import ShardingRules, param_partition_specs, param_shardings, shard_params
from jaxlens.models.student import student_from_teacher
from jaxlens.models.tokenizer import Tokenizer, load_tokenizer

__all__ = [
    "GPT2",
    "KNOWN_HF_CONFIGS",
    "MODEL_CLASSES",
    "REMAT_POLICIES",
    "CausalLM",
    "GGUFCheckpoint",
    "KVCache",
    "Llama",
    "ModelConfig",
    "ModelOutput",
    "RematPolicy",
    "ShardingRules",
    "Tokenizer",
    "build_model",
    "clear_gguf_cache",
    "default_positions",
    "from_pretrained",
    "generate",
    "load_gguf",
    "load_state_dict",
    "load_tokenizer",
    "num_params",
    "param_partition_specs",
    "param_shardings",
    "read_gguf",
    "read_safetensors",
    "shard_params",
    "smollm2_path",
    "student_from_teacher",
    "to_state_dict",
]
