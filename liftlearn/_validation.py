"""Parameter validation as data: constraint tables checked once per fit.

Each estimator declares ``_parameter_constraints``, a dict from constructor
parameter to a list of constraints, any one of which the value must satisfy
(scikit-learn's convention; subclasses merge their parent's table with
``{**Parent._parameter_constraints, ...}``). :func:`validate_params` checks
a table against ``estimator.get_params(deep=False)`` and raises one
:class:`InvalidParameterError` naming the estimator, the parameter, the value
and what would be accepted.

scikit-learn's own machinery (``sklearn.utils._param_validation``) is
private API; like imbalanced-learn, liftlearn keeps the small part it needs.
Numbers follow :mod:`numbers`, so numpy integer and float scalars are
accepted wherever a Python number is (grids built with ``np.arange`` pass
numpy scalars); ``bool`` is never a number here, and float intervals are
finite unless they say otherwise.
"""

from __future__ import annotations

import math
import operator
import os
import string
from numbers import Integral, Real
from typing import Any, Callable, Iterable, Mapping, Optional

import numpy as np

__all__ = [
    "Boolean",
    "Constraint",
    "check_fraction",
    "check_int",
    "Interval",
    "InvalidParameterError",
    "IntSequence",
    "MAX_TTE_EXPAND",
    "Options",
    "PathLike",
    "Predicate",
    "is_prompt_template",
    "validate_params",
]

#: The largest ``tte_expand`` (pixels added to the resolution before TTE's
#: five crops; LIFT+ uses 24 at 224).
MAX_TTE_EXPAND = 1024


class InvalidParameterError(ValueError, TypeError):
    """A parameter has a value that no constraint of its table accepts.

    Subclasses both ValueError and TypeError, as scikit-learn's error of the
    same name does, so either ``except`` catches it.
    """


class Constraint:
    """One acceptable kind of value."""

    def is_satisfied_by(self, value: Any) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def __str__(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


class _NoneConstraint(Constraint):
    def is_satisfied_by(self, value):
        return value is None

    def __str__(self):
        return "None"


def _is_number(value, kind) -> bool:
    return isinstance(value, kind) and not isinstance(value, (bool, np.bool_))


class Interval(Constraint):
    """A number of ``kind`` (``Integral`` or ``Real``) within bounds.

    Parameters
    ----------
    kind : {numbers.Integral, numbers.Real}
    left, right : float or None
        Bounds; None for unbounded.
    closed : {"left", "right", "both", "neither"}, default="both"
    allow_inf : bool, default=False
        Real intervals refuse inf and nan unless this is set (an
        infinite learning rate passes any lower bound).
    """

    def __init__(self, kind, left=None, right=None, *, closed="both", allow_inf=False):
        if kind not in (Integral, Real):
            raise ValueError("kind must be numbers.Integral or numbers.Real")
        if closed not in ("left", "right", "both", "neither"):
            raise ValueError(f"closed={closed!r}")
        self.kind, self.left, self.right, self.closed = kind, left, right, closed
        self.allow_inf = allow_inf

    def is_satisfied_by(self, value):
        if not _is_number(value, self.kind):
            return False
        if self.kind is Real and not self.allow_inf and not math.isfinite(float(value)):
            return False
        if self.left is not None:
            if value < self.left or (value == self.left and self.closed in ("right", "neither")):
                return False
        if self.right is not None:
            if value > self.right or (value == self.right and self.closed in ("left", "neither")):
                return False
        return True

    def __str__(self):
        what = "an int" if self.kind is Integral else "a finite number" if not self.allow_inf else "a number"
        parts = []
        if self.left is not None:
            parts.append(f"{'>=' if self.closed in ('left', 'both') else '>'} {self.left}")
        if self.right is not None:
            parts.append(f"{'<=' if self.closed in ('right', 'both') else '<'} {self.right}")
        return what + (" " + " and ".join(parts) if parts else "")


def _option_type(value) -> type:
    return str if isinstance(value, str) else type(value)


class Options(Constraint):
    """One of a fixed set of values (compared with ``==`` and by type)."""

    def __init__(self, options: Iterable):
        self.options = tuple(options)

    def is_satisfied_by(self, value):
        # Unhashable values (a list given where a str is expected) are simply
        # not among the options. Types must agree (True is not the option 1)
        # except that any str is a str: numpy's str_ comes out of arrays of
        # options, as GridSearchCV grids often are.
        return any(_option_type(value) is _option_type(o) and value == o for o in self.options)

    def __str__(self):
        return "one of " + ", ".join(repr(o) for o in self.options)


class Boolean(Constraint):
    """True or False (numpy booleans too)."""

    def is_satisfied_by(self, value):
        return isinstance(value, (bool, np.bool_))

    def __str__(self):
        return "True or False"


class PathLike(Constraint):
    """A non-empty str or os.PathLike."""

    def is_satisfied_by(self, value):
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        return isinstance(value, str) and bool(value)

    def __str__(self):
        return "a path (str or os.PathLike)"


class IntSequence(Constraint):
    """A non-empty list, tuple or 1-D integer array of ints."""

    def is_satisfied_by(self, value):
        if isinstance(value, np.ndarray):
            return value.ndim == 1 and value.size > 0 and value.dtype.kind in "iu"
        return (
            isinstance(value, (list, tuple))
            and len(value) > 0
            and all(_is_number(v, Integral) for v in value)
        )

    def __str__(self):
        return "a non-empty list of ints"


class Predicate(Constraint):
    """Any value ``check`` accepts; ``description`` says what that is."""

    def __init__(self, check: Callable[[Any], bool], description: str):
        self.check, self.description = check, description

    def is_satisfied_by(self, value):
        try:
            return bool(self.check(value))
        except Exception:  # noqa: BLE001 - a check that cannot run refuses
            return False

    def __str__(self):
        return self.description


def is_prompt_template(value) -> bool:
    """Whether ``value`` is a str with exactly one replacement field, ``{}``
    (or ``{0}``), where ``value.format(name)`` puts the class name.

    ``"{} {}"`` and ``"{x} {}"`` would fail in ``format`` (IndexError,
    KeyError); literal braces are written ``{{`` and ``}}``.
    """
    if not isinstance(value, str):
        return False
    try:
        fields = [(name, spec, conversion)
                  for _, name, spec, conversion in string.Formatter().parse(value)
                  if name is not None]
    except ValueError:  # unbalanced braces
        return False
    return len(fields) == 1 and fields[0] in (("", "", None), ("0", "", None))


def _make(constraint) -> Constraint:
    if constraint is None:
        return _NoneConstraint()
    if isinstance(constraint, Constraint):
        return constraint
    raise TypeError(f"not a constraint: {constraint!r}")


def _describe(constraints) -> str:
    texts = [str(c) for c in constraints]
    return texts[0] if len(texts) == 1 else ", ".join(texts[:-1]) + " or " + texts[-1]


def validate_params(
    constraints: Mapping[str, list], params: Mapping[str, Any], caller: str,
    *, only: Optional[Iterable[str]] = None,
) -> None:
    """Check ``params`` against a constraints table.

    Parameters
    ----------
    constraints : mapping of str to list
        Parameter name -> constraints (``None`` in the list accepts None).
        Parameters without an entry are not checked.
    params : mapping of str to object
    caller : str
        Named in the error (the estimator's class).
    only : iterable of str, optional
        Check only these parameters.

    Raises
    ------
    InvalidParameterError
        For the first parameter, in table order, that no constraint accepts.
    """
    names = constraints if only is None else [n for n in constraints if n in set(only)]
    for name in names:
        if name not in params:
            continue
        value = params[name]
        options = [_make(c) for c in constraints[name]]
        if not any(c.is_satisfied_by(value) for c in options):
            raise InvalidParameterError(
                f"{caller}: parameter {name}={value!r} must be {_describe(options)}"
            )


def check_int(value, name: str, minimum: Optional[int] = None) -> int:
    """``value`` as an int, for function arguments (not estimator parameters).

    ``operator.index`` accepts Python and numpy integers but refuses floats
    such as 2.0, which would otherwise pass silently as an epoch count.

    Raises
    ------
    TypeError
        If ``value`` is not an integer.
    ValueError
        If it is below ``minimum``.
    """
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_fraction(value, name: str) -> float:
    """``value`` as a float in [0, 1] (NaN refused), for function arguments."""
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value
