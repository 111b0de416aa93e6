"""torch_optimizer.NovoGrad with its layer-wise second moment in the param's dtype.

The reference creates ``exp_avg_sq`` (and ``max_exp_avg_sq``) with ``torch.zeros([])``, i.e. in
float32 whatever the params are, which rounds every float64 run to float32 precision. This
subclass creates the same state as the reference does, only in the param's dtype, and leaves
the update to the reference; with float32 params it is the reference unchanged.
"""

from __future__ import annotations

import torch
import torch_optimizer


class NovoGrad(torch_optimizer.NovoGrad):
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and not self.state[p]:
                    self._create_state(p, group)
        return super().step(closure)

    def _create_state(self, p, group):
        state = self.state[p]
        state["step"] = 0
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros((), dtype=p.dtype, device=p.device)
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = torch.zeros((), dtype=p.dtype, device=p.device)
