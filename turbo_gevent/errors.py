"""The exceptions turbo_gevent raises.

    TurboGeventError
    ├── BrokerError        the message broker (Redis) is unreachable or refused
    └── ConfigurationError a setting that cannot work (raised at construction)

Bad arguments to the builders and constructors raise the built-in
``ValueError`` / ``TypeError``; ``ConfigurationError`` is a ``ValueError``
too, so ``except ValueError`` keeps working.
"""


class TurboGeventError(Exception):
    """Base class of every error turbo_gevent raises on its own behalf."""


class BrokerError(TurboGeventError):
    """The broker could not accept a message: the caller decides what to do."""


class ConfigurationError(TurboGeventError, ValueError):
    """A setting that cannot work, found when the object is built."""
