"""Model loaders that make BERT-family encoders exportable with the TorchScript exporter.

AMD's Ryzen AI BF16 samples export with ``torch.onnx.export`` (TorchScript, not dynamo), opset 17,
static 1 x 512, int64 ``input_ids`` / ``attention_mask``. Olive 0.13's ``OnnxConversion`` with
``use_dynamo_exporter: false`` fails on BERT / XLM-R under transformers 5.x with
``forward() got multiple values for argument 'use_cache'``. Root cause, two pieces that are each
fine alone:

1. The TorchScript exporter (``torch.onnx`` ``_decide_input_format``) turns Olive's keyword dummy
   inputs into one positional tuple that follows ``forward``'s signature, filling every later
   parameter with its default; for ``XLMRobertaModel`` / ``BertModel`` that reaches ``use_cache``
   (the 9th parameter), passed positionally as ``None``.
2. transformers 5's ``@merge_with_config_defaults`` finds ``use_cache``'s position with
   ``func.__code__.co_varnames``, but ``func`` is the ``*args, **kwargs`` wrapper of the next
   decorator (``@capture_outputs``), so the position is not found and it adds
   ``use_cache=config.use_cache`` as a keyword too. Plain PyTorch shows it:
   ``model(ids, mask, None, None, None, None, None, None, None)`` raises the same TypeError.

No io_config setting avoids step 1. So the recipes export a thin module whose ``forward`` takes
exactly ``(input_ids, attention_mask)`` and calls the Hugging Face model with keywords; its
signature is what the exporter binds, and it returns one tensor, named by the io_config.
It works for any encoder whose ``forward`` accepts those two keywords (BERT, XLM-R, DistilBERT).
"""

from __future__ import annotations

import torch

__all__ = ["EncoderForExport", "load_feature_extractor", "load_text_classifier"]


class EncoderForExport(torch.nn.Module):
    """(input_ids, attention_mask) -> one named output of a Hugging Face encoder, called by keyword."""

    def __init__(self, model: torch.nn.Module, output: str):
        super().__init__()
        self.model = model
        self.output = output

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        return outputs[self.output]


def _load(model_path: str, auto_class: str, output: str) -> EncoderForExport:
    import transformers

    # eager attention exports as MatMul/Softmax without the IsNaN/Where guards that the SDPA
    # decomposition adds: same numbers, fewer ops for the NPU compiler to place
    model = getattr(transformers, auto_class).from_pretrained(model_path, attn_implementation="eager")
    return EncoderForExport(model.eval(), output).eval()


def load_feature_extractor(model_path: str) -> EncoderForExport:
    """Olive ``model_loader`` for embedding models: returns ``last_hidden_state`` [batch, seq, hidden]."""
    return _load(model_path, "AutoModel", "last_hidden_state")


def load_text_classifier(model_path: str) -> EncoderForExport:
    """Olive ``model_loader`` for cross-encoders (rerankers): returns ``logits`` [batch, labels]."""
    return _load(model_path, "AutoModelForSequenceClassification", "logits")
