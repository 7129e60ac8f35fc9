"""Errors meant for users.

Every error a user can cause (a bad argument, a missing file, a model that cannot be
pruned as asked) is an :class:`AutopruneError`. The command line prints it as one line
and exits with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class AutopruneError(Exception):
    """Base class of every error that autoprune raises for bad input."""


class ConfigError(AutopruneError, ValueError):
    """An argument or spec value is invalid; the message names it and what is allowed."""


class DataError(AutopruneError):
    """A dataset cannot be found or read."""


class ModelError(AutopruneError):
    """A model cannot be built, loaded or traced."""


class PruningError(AutopruneError):
    """A pruning request cannot be carried out on this model."""


class TrialFault(AutopruneError):
    """One candidate of a search broke (outputs NaN or inf, over its time limit): its trial
    is recorded as failed, with this message as the reason, and the search goes on."""


class SearchError(AutopruneError):
    """A search cannot go on: too many trials in a row failed."""


class FinalizedElsewhere(AutopruneError):
    """A shared study was finalized by another process, into a run directory this machine
    does not see; the message says who, where, and what came of it. Not a fault: the
    command line prints it and exits 0."""
