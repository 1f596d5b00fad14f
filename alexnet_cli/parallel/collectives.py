"""The only communication of the paper's split: gathering one tower's maps from the other.

``gather`` concatenates every rank's slice along a dimension. Its backward sums the
gradient over the group (each rank's next layer used the gathered maps differently)
and keeps this rank's slice; where everything after the gather is the same on every
rank (the class scores), ``replicated=True`` keeps the slice without summing.
Every tensor handed to a collective is counted in a ``CommunicationLog``.
"""

from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook


@dataclass
class CommunicationLog:
    """Bytes this rank handed to collectives, by the name of the exchange point."""

    bytes_by_point: dict[str, int] = field(default_factory=dict)

    def add(self, point: str, tensor: torch.Tensor) -> None:
        self.bytes_by_point[point] = self.bytes_by_point.get(point, 0) + tensor.numel() * tensor.element_size()

    @property
    def total(self) -> int:
        return sum(self.bytes_by_point.values())

    def reset(self) -> None:
        self.bytes_by_point.clear()


def _all_gather_rows(x: torch.Tensor, group, sizes: list[int], dim: int) -> torch.Tensor:
    """all_gather slices of (possibly) different sizes along ``dim``, padding to the largest."""
    largest = max(sizes)
    if x.shape[dim] < largest:
        pad = list(x.shape)
        pad[dim] = largest - x.shape[dim]
        x = torch.cat([x, x.new_zeros(pad)], dim=dim)
    parts = [torch.empty_like(x) for _ in sizes]
    dist.all_gather(parts, x.contiguous(), group=group)
    return torch.cat([part.narrow(dim, 0, size) for part, size in zip(parts, sizes)], dim=dim)


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group, rank, sizes, dim, replicated, log, point):
        ctx.group, ctx.rank, ctx.sizes, ctx.dim, ctx.replicated = group, rank, sizes, dim, replicated
        ctx.log, ctx.point = log, point
        log.add(f"{point} forward", x)
        return _all_gather_rows(x, group, sizes, dim)

    @staticmethod
    def backward(ctx, grad):
        if not ctx.replicated:
            grad = grad.contiguous()
            ctx.log.add(f"{ctx.point} backward", grad)
            dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        start = sum(ctx.sizes[: ctx.rank])
        return grad.narrow(ctx.dim, start, ctx.sizes[ctx.rank]), None, None, None, None, None, None, None


def gather(x: torch.Tensor, *, group, rank: int, sizes: list[int], dim: int = 1, replicated: bool = False,
           log: CommunicationLog, point: str) -> torch.Tensor:
    """Concatenate every rank's ``x`` along ``dim`` (rank order); differentiable."""
    return _Gather.apply(x, group, rank, sizes, dim, replicated, log, point)


def gather_rows(x: torch.Tensor, *, group, sizes: list[int]) -> torch.Tensor:
    """Non-differentiable gather along dim 0, for assembling full weights and optimizer state."""
    return _all_gather_rows(x.detach(), group, sizes, 0)


def counting_ddp(model: torch.nn.Module, group, counted: dict[str, int], point: str):
    """DDP over ``group`` whose gradient all-reduce adds every bucket's bytes to ``counted[point]``."""
    def hook(state, bucket):
        counted[point] = counted.get(point, 0) + bucket.buffer().numel() * bucket.buffer().element_size()
        return allreduce_hook(state, bucket)

    ddp = torch.nn.parallel.DistributedDataParallel(model, process_group=group)
    ddp.register_comm_hook(group, hook)
    return ddp
