"""The errors a user can cause and fix: the command line reports these in one line (exit 2).

Every other exception is a bug and keeps its traceback. Each user error is also a ``ValueError``
(or ``KeyError`` for an unknown name), so code that catches those keeps working.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: a name, a path, a file, an option value. The message says which."""


class ConfigError(UserError, ValueError):
    """An option or combination of options that cannot work (``--lr -1``, batch not divisible by
    the devices, a model argument the model rejects)."""


class DatasetError(UserError, ValueError):
    """A data set spec, path or file that cannot be used; the message says which and why."""


class JaxvisionWarning(UserWarning):
    """Something a user should know that does not stop the work (a corrupt checkpoint skipped, a
    resumed run whose options changed). The command line prints each as one ``warning:`` line."""


__all__ = ["ConfigError", "DatasetError", "JaxvisionWarning", "UserError"]
