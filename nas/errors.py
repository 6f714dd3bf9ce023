"""Exception types shared by every APFP-NAS package.

Each error subclasses both :class:`ApfpError` (so a caller can catch everything
the framework raises on bad input) and the matching built-in type (so generic
``except ValueError`` code keeps working).
"""

from __future__ import annotations


class ApfpError(Exception):
    """Base class of every error APFP-NAS raises on invalid input or state."""


class InvalidArchitectureError(ApfpError, ValueError):
    """An architecture or encoding does not belong to its search space."""


class DatasetError(ApfpError, ValueError):
    """A dataset name, file or partitioning request is invalid."""


class ProfileError(ApfpError, ValueError):
    """A hardware profile file or name is invalid."""


class SurrogateError(ApfpError, ValueError):
    """A surrogate cannot be fitted, loaded or applied as requested."""


class SearchError(ApfpError, ValueError):
    """A search request cannot be met (for example an infeasible latency budget)."""


class ReportError(ApfpError, ValueError):
    """A client report is malformed or holds values out of range."""


class CheckpointError(ApfpError, ValueError):
    """A checkpoint or run directory is missing, partial, corrupt or from another run."""
