"""wsss: weakly supervised semantic segmentation from image-level tags."""

__version__ = "0.1.0"

# attention maps (issue 3)
from wsss.attention import AttentionMapMethod, getam, make_map_method  # noqa: E402
from wsss.models.attention_capture import AttentionCapture, token_layout  # noqa: E402
