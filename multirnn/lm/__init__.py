"""The character-level language model, built on top of the core: embedding (or one-hot), one recurrent
spec, an output layer; its NumPy reference, trainer, checkpoints and text pipeline.

``multirnn.lm.model`` the model and its functions (re-exported here), ``head`` the output layer written
once against the backend operations, ``reference`` its NumPy oracle, ``train`` the trainer,
``checkpoint`` LM checkpoints, ``text`` tokenizer, vocabulary and the bundled corpus (``data/``).
"""
from .model import (LanguageModel, check_lm, check_lm_params, generate, init_lm_params, logits,
                    loss_and_grads, perplexity)
from .train import Progress, TrainConfig, Trainer

__all__ = ["LanguageModel", "Progress", "TrainConfig", "Trainer", "check_lm", "check_lm_params", "generate",
           "init_lm_params", "logits", "loss_and_grads", "perplexity"]
