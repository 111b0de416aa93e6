"""pytorch_optimizer's Adan, AdEMAMix and MARS with a step count per param.

These classes count steps per param group (``group["step"]``, advanced by every ``step()``
even for a group whose params have no gradient), where optimkit, as torch.optim, counts them
per param. The parity tests let one param sit out some steps; so that the two agree there, the
adapter gives each param a param group of its own and takes back the step of a group that had
no gradient. Each class is the pytorch_optimizer class otherwise untouched.
"""

from __future__ import annotations

import pytorch_optimizer


def per_param_steps(cls):
    class PerParamSteps(cls):
        def __init__(self, params, **kwargs):
            params = list(params)
            if params and not isinstance(params[0], dict):
                params = [{"params": [p]} for p in params]
            super().__init__(params, **kwargs)

        def step(self, closure=None):
            idle = [(g, g.get("step")) for g in self.param_groups
                    if all(p.grad is None for p in g["params"])]
            loss = super().step(closure)
            for group, step in idle:
                if step is None:
                    group.pop("step", None)
                else:
                    group["step"] = step
            return loss

    PerParamSteps.__name__ = cls.__name__
    return PerParamSteps


Adan = per_param_steps(pytorch_optimizer.Adan)
AdEMAMix = per_param_steps(pytorch_optimizer.AdEMAMix)
MARS = per_param_steps(pytorch_optimizer.MARS)
