"""Gradient centralization (Yong et al. 2020, arXiv:2004.01461)."""

from __future__ import annotations

from ..core.parts import stat


@stat(provides=("grads",), shaped=True, gc_conv_only=False)
def centralize_gradient(b, gc_conv_only):
    """Remove the mean of each output unit's gradient: ``g = g - mean(g over dims 1..)``.

    Applies to tensors with ndim > 1 (ndim > 3 with ``gc_conv_only``: conv kernels only), as
    Ranger 2020 does; others pass as they are. ``p.grad`` is not written: the gradient becomes
    a new list. Recipes switch it on with ``only_if("use_gc")``.
    """
    min_dim = 3 if gc_conv_only else 1
    b.grads = [
        g - g.mean(dim=tuple(range(1, g.dim())), keepdim=True) if g.dim() > min_dim else g
        for g in b.grads
    ]
