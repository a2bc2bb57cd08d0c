"""Placeholder: being written."""


def cw(*args, **kwargs):
    raise NotImplementedError("cw is not written yet")
