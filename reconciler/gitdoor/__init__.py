"""The door to git: the fleet repository as a source of revisions and trees. (Not named `git`, which
would shadow GitPython's package.)"""

__all__ = ["source"]
