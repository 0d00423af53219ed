"""Exceptions and warnings raised by liftlearn.

Each exception subclasses the built-in (or scikit-learn) exception that a
caller would already catch, so ``except ValueError`` keeps working.
"""

__all__ = [
    "BackboneError",
    "BadImageError",
    "LiftLearnWarning",
    "NotFittedError",
    "TrainingError",
    "UnknownLabelWarning",
]


class BackboneError(RuntimeError):
    """The CLIP backbone could not be built, loaded or adapted."""


class BadImageError(ValueError):
    """An input image is missing, unreadable or not an image.

    Attributes
    ----------
    path : str
        The offending file.
    """

    def __init__(self, path, reason=None):
        if reason is None:
            # torch re-raises a DataLoader worker's exception as
            # ``type(exc)(formatted_message)``: keep that message whole.
            self.path = None
            self.reason = None
            super().__init__(path)
            return
        self.path = str(path)
        self.reason = str(reason)
        super().__init__(f"cannot use image {self.path!r}: {self.reason}")

    def __reduce__(self):
        # Exceptions cross process boundaries (DataLoader workers, joblib);
        # the default reduce would call __init__ with the message only.
        return (type(self), (self.path, self.reason))


class TrainingError(RuntimeError):
    """Training diverged or otherwise could not finish."""


class LiftLearnWarning(UserWarning):
    """Base class of the warnings liftlearn emits."""


class UnknownLabelWarning(LiftLearnWarning):
    """``score`` met labels the model was not fitted with; they count as
    errors (as in scikit-learn's accuracy)."""


def __getattr__(name):
    # scikit-learn's own NotFittedError (what check_is_fitted raises),
    # imported on first use so that the torch layers below the estimators
    # never import scikit-learn.
    if name == "NotFittedError":
        from sklearn.exceptions import NotFittedError

        return NotFittedError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
