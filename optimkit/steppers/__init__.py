"""Steppers: parts that write the params.

Every part defined in a module of this package is exported here (see ``core.parts.parts_of``).
"""

from ..core.parts import parts_of

globals().update(_parts := parts_of(__name__, __path__))
__all__ = list(_parts)
