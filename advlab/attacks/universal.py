"""Placeholder: being written."""


def universal(*args, **kwargs):
    raise NotImplementedError("universal is not written yet")
