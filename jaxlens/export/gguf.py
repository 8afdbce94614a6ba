"""A Llama student as one GGUF file (``model.gguf``) for llama.cpp-style runtimes and ``transformers``' GGUF loader."""

from __future__ import annotations

import os

from jaxlens import data, models
from jaxlens.models.gguf import check_gguf_writable, write_gguf
from jaxlens.models.tokenizer import gguf_tokenizer_metadata

FILENAME = "model.gguf"


def check_gguf(student_config: models.ModelConfig, tokenizer: models.Tokenizer) -> None:
  """Raise ``ValueError`` before anything is written if the student or its tokenizer has no GGUF form."""
  check_gguf_writable(student_config.to_hf_config())
  gguf_tokenizer_metadata(tokenizer)


def write_gguf_file(folder: str, student: models.CausalLM, tokenizer: models.Tokenizer, *, template: str,
                    dtype: str) -> list[str]:
  """Write ``folder/model.gguf``: matrices in ``dtype`` (F32 / F16 / BF16), norms in F32, the tokenizer and the chat
  template of the run's prompt template (:func:`jaxlens.models.gguf.write_gguf`).

  Returns:
    the written file names.
  """
  write_gguf(os.path.join(folder, FILENAME), student.config.to_hf_config(), models.to_state_dict(student),
             gguf_tokenizer_metadata(tokenizer, chat_template=data.chat_template(template)), tensor_type=dtype)
  return [FILENAME]
