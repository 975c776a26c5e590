"""Errors of the model builders, importable without torch (the CLI catches them)."""


class PretrainedWeightsError(ValueError):
    """model.pretrained names a file that is missing, unreadable or does not fit the model."""
