"""Griffe extension: Sphinx roles in docstrings (``:mod:`.tasks```) render as code."""

from __future__ import annotations

import re

import griffe

_ROLE = re.compile(r":(?:mod|class|func|meth|attr|data|exc|obj|ref):`~?([^`]+)`")


class SphinxRoles(griffe.Extension):
    """Rewrites ``:role:`target``` as ```target``` in every docstring loaded."""

    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(r"`\1`", obj.docstring.value)
