"""Model loaders for the BCE recipes (Olive's ``model_script`` must be a file; the code is in the package).

See ``olive_bf16_pass/olive/export.py`` for why the TorchScript export needs them.
"""

from olive_bf16_pass.olive.export import load_feature_extractor, load_text_classifier

__all__ = ["load_feature_extractor", "load_text_classifier"]
