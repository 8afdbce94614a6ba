"""A student as a Hugging Face ``save_pretrained`` folder that ``transformers`` loads with no custom code.

=========================  ==================================================================================
file                       contents
=========================  ==================================================================================
``config.json``            :meth:`~jaxlens.models.ModelConfig.to_hf_config` + token ids + dtype
``model.safetensors``      :func:`~jaxlens.models.to_state_dict` (the loader's rule table read backwards),
                           in ``dtype``; tied models have no ``lm_head.weight``
``generation_config.json`` BOS / EOS / padding ids (generation stops at the EOS the student learned)
``tokenizer.json`` …       the run's tokenizer (:func:`~jaxlens.models.tokenizer.save_hf_tokenizer`) with the
                           chat template of the run's prompt template (:func:`~jaxlens.data.chat_template`)
=========================  ==================================================================================
"""

from __future__ import annotations

import json
import os

import ml_dtypes
import numpy as np

from jaxlens import data, models
from jaxlens.models.tokenizer import save_hf_tokenizer

#: Export dtype name → numpy dtype of the stored tensors.
NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}


def token_ids(tokenizer: models.Tokenizer) -> dict[str, int | None]:
  """``bos_token_id`` / ``eos_token_id`` / ``pad_token_id`` of ``config.json`` and ``generation_config.json``."""
  return {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id, "pad_token_id": tokenizer.pad_id}


def write_hf(folder: str, student: models.CausalLM, tokenizer: models.Tokenizer, *, template: str,
             dtype: str) -> list[str]:
  """Write the ``save_pretrained`` files of ``student`` and ``tokenizer`` into the existing ``folder``.

  Args:
    folder: an existing (empty) folder.
    student: a GPT-2 or Llama model (float32 parameters).
    tokenizer: the run's tokenizer.
    template: the run's prompt template (``chatml`` | ``alpaca``), written as the chat template.
    dtype: ``float32`` | ``float16`` | ``bfloat16`` for the stored tensors.

  Returns:
    the written file names.
  """
  from safetensors.numpy import save_file

  cfg = student.config
  hf_config = {**cfg.to_hf_config(), **token_ids(tokenizer), "dtype": dtype, "torch_dtype": dtype}
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump(hf_config, f, indent=2)
  with open(os.path.join(folder, "generation_config.json"), "w") as f:
    json.dump(token_ids(tokenizer), f, indent=2)
  state = {key: np.ascontiguousarray(value.astype(NUMPY_DTYPES[dtype]))
           for key, value in models.to_state_dict(student).items()}
  save_file(state, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
  tokenizer_files = save_hf_tokenizer(tokenizer, folder, chat_template=data.chat_template(template),
                                      model_max_length=cfg.max_position_embeddings)
  return ["config.json", "generation_config.json", "model.safetensors", *tokenizer_files]
