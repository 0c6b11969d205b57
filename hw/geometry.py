"""Memory geometry of one partition's MLP layer engine, derived from the configuration.

Shared by the engine (``hw/mlp_engine.py``) and the host code that packs its memories
(``sim/mlp_program.py``), so both sides compute word counts and addresses from one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rpaccel.hw.config import AccelConfig

__all__ = ["EngineGeometry"]


@dataclass(frozen=True)
class EngineGeometry:
    """Memory geometry of one partition's engine, derived from the configuration."""

    rows: int          # R: input lanes of a weight tile
    cols: int          # Cp: output lanes of a weight tile (one partition)
    sub_batch: int
    max_layer_dim: int
    weight_words: int
    bias_words: int
    act_buffers: int = 2

    @classmethod
    def of(cls, config: AccelConfig) -> "EngineGeometry":
        return cls(rows=config.rows, cols=config.partition_cols, sub_batch=config.sub_batch,
                   max_layer_dim=config.max_layer_dim,
                   weight_words=config.weight_capacity // config.partition_cols,
                   bias_words=config.bias_capacity // config.partition_cols,
                   act_buffers=config.act_buffers)

    @property
    def act_lanes(self) -> int:
        """W: int8 lanes of one activation-buffer word."""
        return max(self.rows, self.cols)

    @property
    def act_chunks(self) -> int:
        return math.ceil(self.max_layer_dim / self.act_lanes)

    @property
    def act_words(self) -> int:
        return self.act_chunks * self.sub_batch

    def in_tiles(self, n_in: int) -> int:
        return math.ceil(n_in / self.rows)

    def out_tiles(self, n_out: int) -> int:
        return math.ceil(n_out / self.cols)

    def weight_tiles(self, n_in: int, n_out: int) -> int:
        return self.in_tiles(n_in) * self.out_tiles(n_out)
