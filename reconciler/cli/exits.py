"""The exit statuses of every `reconciler` command, in one place: scripts and CI read them."""

__all__ = ["EXIT_BUG", "EXIT_FINDING", "EXIT_OK", "EXIT_USAGE"]

EXIT_OK = 0  # done, nothing found
EXIT_FINDING = 1  # done, and something was found: an invalid manifest, a blocked change, a bad signature
EXIT_USAGE = 2  # not done: bad usage, or an environment that cannot be read, or a site that needs an operator
EXIT_BUG = 3  # not done: a bug in reconciler
