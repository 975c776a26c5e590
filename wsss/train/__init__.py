"""Training: the tag classifier and the segmenters."""
