"""What the A/B report raises when it cannot be made: one line saying why and what to do."""


class AbTestError(ValueError):
    """The report cannot be made as asked; the message says why and what to do."""


class PredictionLogUnavailable(AbTestError):
    """The prediction log cannot be read: unreachable, missing, or without its tables."""
