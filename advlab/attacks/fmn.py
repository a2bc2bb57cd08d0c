"""Placeholder: being written."""


def fmn(*args, **kwargs):
    raise NotImplementedError("fmn is not written yet")
