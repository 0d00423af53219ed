"""Exceptions and warnings raised by liftlearn.

Each exception subclasses the built-in (or scikit-learn) exception that a
caller would already catch, so ``except ValueError`` keeps working.
"""

__all__ = [
    "BackboneError",
    "BadImageError",
    "LiftLearnWarning",
    "ModelFileError",
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
    reason : str
        What is wrong with it. Both survive pickling and a DataLoader
        worker process (whose exceptions torch re-raises from their text).
    """

    def __init__(self, path, reason=None):
        if reason is None:
            # torch re-raises a DataLoader worker's exception as
            # ``type(exc)(formatted_worker_traceback)``: recover the path and
            # the reason from the traceback's last line, which this class
            # wrote; keep any other message whole.
            parsed = _parse_bad_image(str(path))
            if parsed is None:
                self.path = None
                self.reason = None
                super().__init__(path)
                return
            path, reason = parsed
        self.path = str(path)
        self.reason = str(reason)
        super().__init__(f"cannot use image {self.path!r}: {self.reason}")

    def __reduce__(self):
        # Exceptions cross process boundaries (DataLoader workers, joblib);
        # the default reduce would call __init__ with the message only.
        if self.reason is None:
            return (type(self), self.args)
        return (type(self), (self.path, self.reason))


def _parse_bad_image(message: str):
    """``(path, reason)`` from the text of a formatted BadImageError, or None.

    The path is read back from its ``repr`` with :func:`ast.literal_eval`
    (a string literal only; nothing is evaluated).
    """
    import ast
    import re

    marker = "BadImageError: cannot use image "
    start = message.rfind(marker)
    if start < 0:
        return None
    rest = message[start + len(marker):]
    match = re.match(r"""('(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*"): """, rest)
    if match is None:
        return None
    try:
        path = ast.literal_eval(match.group(1))
    except (ValueError, SyntaxError):
        return None
    if not isinstance(path, str):
        return None
    return path, rest[match.end():].rstrip("\n")


class ModelFileError(ValueError):
    """A model file that liftlearn will not load: not a liftlearn model,
    malformed, or asking for something loading refuses (the network, a
    class, a size).

    Attributes
    ----------
    path : str
        The file.
    field : str or None
        The part of the file at fault (``"params.lr"``,
        ``"fitted.classes_"``, ``"header"``, ``"tensors"``, ...).
    reason : str
    """

    def __init__(self, path, field=None, reason=None):
        self.path = str(path)
        self.field = None if field is None else str(field)
        self.reason = None if reason is None else str(reason)
        if self.reason is None:
            # One argument: an already formatted message (unpickling by
            # message, as torch and joblib may do).
            super().__init__(self.path)
            return
        where = f" ({self.field})" if self.field else ""
        super().__init__(f"cannot load {self.path!r}{where}: {self.reason}")

    def __reduce__(self):
        if self.reason is None:
            return (type(self), (self.path,))
        return (type(self), (self.path, self.field, self.reason))


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
