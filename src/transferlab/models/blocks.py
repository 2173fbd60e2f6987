"""A feature set's `blocks` as the indices of the blocks a readout takes (cnn_blocks for torchvision CNNs,
timm_backbones.Readout for timm models)."""
from __future__ import annotations

from transferlab.config.errors import PipelineError


def block_indices(blocks: int | tuple[int, ...], depth: int, model_name: str) -> list[int]:
    """`blocks` as absolute block indices: an int n is the last n blocks; a tuple lists indices from 0, negative
    from the end (as timm's forward_intermediates takes them)."""
    if isinstance(blocks, int):
        if not 0 < blocks <= depth:
            raise PipelineError(f"blocks {blocks}: {model_name} has {depth} blocks")
        return list(range(depth - blocks, depth))
    out = []
    for i in blocks:
        if not -depth <= i < depth:
            raise PipelineError(f"blocks {list(blocks)}: block {i} is out of range; {model_name} has {depth} "
                                f"blocks (0 to {depth - 1}, or -1 to -{depth} from the end)")
        out.append(i % depth)
    if len(set(out)) != len(out):
        raise PipelineError(f"blocks {list(blocks)} names a block twice ({model_name} has {depth} blocks)")
    return sorted(out)
