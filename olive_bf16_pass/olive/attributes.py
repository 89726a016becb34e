"""Names the pass and the evaluators share, in a module that imports nothing.

The evaluators are imported at every ``import olive`` (the start-up hook registers them, see
discovery.py); the pass, and with it the whole converter, only when a recipe uses it. So what both
need lives here, not in passes.py.
"""

SOURCE_MODEL_ATTRIBUTE = "bf16_source_model_path"  # model_attributes key: the FP32 model a BF16 one came from
