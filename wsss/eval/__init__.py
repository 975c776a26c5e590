"""Evaluation: confusion matrices and segmentation metrics."""
