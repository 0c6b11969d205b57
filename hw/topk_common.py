"""What every top-k structure shares: the payload layouts, the rank keys and the ports.

The payload layouts are module-level functions of the configuration, so testbenches and the
host pack and unpack beats with the hardware's own layouts
(``score_layout(config).const({...}).as_bits()``), never by re-deriving bit positions.
``rpaccel.hw.topk`` re-exports them; the structures are ``rpaccel.hw.topk`` (insertion
array, :class:`~rpaccel.hw.topk.TopKFilter`) and ``rpaccel.hw.topk_heap``.
"""

from amaranth import Cat, Shape, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from rpaccel.hw.config import AccelConfig

__all__ = ["TopKPorts", "score_layout", "result_layout", "k_shape", "ERROR_COUNTER_WIDTH"]

#: Width of the ``errors`` counter (wraps modulo ``2**ERROR_COUNTER_WIDTH``).
ERROR_COUNTER_WIDTH = 32


def k_shape(config: AccelConfig) -> Shape:
    """Shape of the per-query ``k`` field: unsigned, wide enough for ``0..topk_max``."""
    return Shape.cast(range(config.topk_max + 1))


def score_layout(config: AccelConfig) -> data.StructLayout:
    """One candidate entering a top-k unit.

    ``score`` (signed ``acc_width``), ``id`` (unsigned ``id_width``), ``k`` (how many to
    keep; read on the first beat of a query only) and ``last`` (the query's final candidate).
    """
    return data.StructLayout({
        "score": signed(config.acc_width),
        "id": unsigned(config.id_width),
        "k": k_shape(config),
        "last": 1,
    })


def result_layout(config: AccelConfig) -> data.StructLayout:
    """One result leaving a top-k unit: ``score``, ``id``, ``last`` and ``error``.

    On an error beat (a rejected query) ``score`` and ``id`` are zero and ``last`` is set.
    """
    return data.StructLayout({
        "score": signed(config.acc_width),
        "id": unsigned(config.id_width),
        "last": 1,
        "error": 1,
    })


def _k_out_of_range(k, topk_max: int):
    """``k == 0 or k > topk_max``; the second test is left out when ``k``'s field cannot
    exceed ``topk_max`` (``topk_max = 2**n - 1``), where it would be a constant comparison."""
    if topk_max >= (1 << len(k)) - 1:
        return k == 0
    return (k == 0) | (k > topk_max)


def _rank_key(score, cand_id):
    """An unsigned value that orders candidates exactly as docs/numerics.md does: a larger key
    is a better candidate (higher score; on equal scores, lower id).

    The score's sign bit is flipped (signed order becomes unsigned order) and the id's bits
    are inverted (lower id becomes larger), so one ``acc_width + id_width``-bit comparison
    (a single carry chain) replaces a signed ``>``, an ``==`` and an id ``<``. The unit
    stores keys, not scores and ids, so no inverter sits between a register and a
    comparator.
    """
    width = len(score)
    return Cat(~cand_id, score[:width - 1], ~score[width - 1])


def _unkey(key, acc_width: int, id_width: int):
    """(score, id) of a key made by :func:`_rank_key`."""
    score = Cat(key[id_width:id_width + acc_width - 1], ~key[id_width + acc_width - 1])
    return score.as_signed(), ~key[:id_width]


class TopKPorts(wiring.Component):
    """The ports of every top-k structure (:class:`TopKFilter` documents them), built from
    the configuration."""

    def __init__(self, config: AccelConfig):
        if not isinstance(config, AccelConfig):
            raise TypeError(f"config must be an AccelConfig, not {config!r}")
        self._config = config
        super().__init__({
            "scores": In(stream.Signature(score_layout(config))),
            "topk": Out(stream.Signature(result_layout(config))),
            "errors": Out(unsigned(ERROR_COUNTER_WIDTH)),
        })

    @property
    def config(self) -> AccelConfig:
        return self._config
