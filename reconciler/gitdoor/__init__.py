"""The door to git: every git command reconciler runs (``git``), and the fleet repository as a
source of revisions and trees (``source``). (The package is not named `git`, which would shadow
GitPython's package.)"""

__all__ = ["git", "source"]
