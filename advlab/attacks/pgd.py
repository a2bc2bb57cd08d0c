"""Placeholder: being written."""


def pgd(*args, **kwargs):
    raise NotImplementedError("pgd is not written yet")
