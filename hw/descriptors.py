"""In-memory formats of RPAccel: command-ring entries, completions, model and table
descriptors, candidate records and results, defined once as Amaranth data layouts.

The hardware decodes these layouts and the host (``sim/scheduler.py``) encodes them with
the same objects (``layout.const({...}).as_bits()`` to little-endian bytes, see
:func:`pack` and :func:`unpack`), so neither side re-derives a bit position. Every format
has a fixed size in bytes (a multiple of 4); a layout narrower than its size is padded with
zeros at the top.

**Command ring**: ``2**RING_ENTRIES.LOG2`` entries of :data:`COMMAND_BYTES` bytes at
``RING_BASE``. Each starts with :func:`command_header_layout` (``opcode``, ``tag``); the
rest depends on the opcode (:data:`OPCODES`). For each entry the accelerator writes one
completion (:func:`completion_layout`, :data:`COMPLETION_BYTES` bytes) at the same index of
the completion ring at ``COMPLETION_BASE``.

**Candidates**: a query's candidates are an array of :func:`record_layout` records (one per
candidate, :func:`record_bytes` each) at ``records_addr``. A candidate's *position* in that
array is its id inside the accelerator: top-k ties break on the lower position, so the host
orders candidates by ascending item id to get the golden's tie-break. Each record holds the
candidate's dense features (int8 codes) and its embedding lookups: for each table of the
model in order, the rows of its bag, the last one flagged ``bag_end``.

**Results**: the final stage's kept list, best first, as :func:`result_layout` entries
(position and score) at ``result_addr``; with a non-zero ``kept_addr`` every stage's kept
list too, stage ``s`` at ``kept_addr + s * topk_max * RESULT_BYTES``.
"""

from __future__ import annotations

from amaranth import Shape, signed
from amaranth.lib import data

from .config import AccelConfig

__all__ = ["OPCODES", "LOAD_MODEL_GANG", "COMMAND_BYTES", "COMPLETION_BYTES", "RESULT_BYTES",
           "LAYER_BYTES", "TABLE_BYTES", "PAIR_BYTES", "ADDR_WIDTH", "command_header_layout",
           "load_model_layout", "load_static_layout", "run_query_layout", "stage_layout",
           "completion_layout", "layer_layout", "table_layout", "pair_layout", "lookup_layout",
           "record_layout", "record_bytes", "result_layout", "pack", "unpack",
           "command_layouts", "layout_bytes"]

#: Opcodes of ring entries.
OPCODES = {"NOP": 0, "LOAD_MODEL": 1, "LOAD_STATIC": 2, "RUN_QUERY": 3}

#: ``LOAD_MODEL`` header flag: the load is one gang member's column slice of the model
#: (``rpaccel.sim.mlp_program.gang_slice``); the slot's partitions become its earlier gang
#: loads' plus this one's, and only a ganged stage on exactly those partitions may run it.
LOAD_MODEL_GANG = 1

COMMAND_BYTES = 64
COMPLETION_BYTES = 64
RESULT_BYTES = 8
LAYER_BYTES = 16
TABLE_BYTES = 32
PAIR_BYTES = 4
#: Width of every memory address in a descriptor.
ADDR_WIDTH = 64


def command_header_layout() -> data.StructLayout:
    """The first 32 bits of every ring entry."""
    return data.StructLayout({"opcode": 8, "flags": 8, "tag": 16})


def load_model_layout(config: AccelConfig) -> data.StructLayout:
    """``LOAD_MODEL``: load model ``slot`` into the partitions of ``partition_mask``.

    The accelerator copies ``weight_words`` engine weight words (``partition_cols`` operands
    each, ``sim/mlp_program.py`` order) from ``weights_addr`` into words
    ``weight_word_base ..`` of each named partition's weight memory, likewise the bias words,
    reads ``n_bottom + n_top`` layer descriptors (:func:`layer_layout`) from ``layers_addr``
    (bottom MLP first; the top MLP ends in its score layer), ``n_tables`` table descriptors
    (:func:`table_layout`) from ``tables_addr`` and ``n_pairs`` interaction parameters
    (:func:`pair_layout`) from ``pairs_addr``. ``emb_dim`` is the model's embedding
    dimension and ``n_dense`` its dense inputs. With :data:`LOAD_MODEL_GANG` in the header's
    flags the words are one gang member's slice, loaded into the one partition of the mask
    (a gang's ``G`` members take ``G`` loads of the same slot)."""
    return data.StructLayout({
        "header": command_header_layout(),
        "slot": 8, "partition_mask": 8, "n_bottom": 4, "n_top": 4, "n_tables": 8,
        "emb_dim": 16, "n_dense": 8, "n_pairs": 16,
        "weights_addr": ADDR_WIDTH, "weight_words": 20, "weight_word_base": 20,
        "bias_addr": ADDR_WIDTH, "bias_words": 16, "bias_word_base": 16,
        "layers_addr": ADDR_WIDTH, "tables_addr": ADDR_WIDTH, "pairs_addr": ADDR_WIDTH,
    })


def load_static_layout(config: AccelConfig) -> data.StructLayout:
    """``LOAD_STATIC``: copy ``rows`` rows of ``emb_dim_max`` bytes from ``src_addr`` into
    the static embedding cache from row ``static_base`` on."""
    return data.StructLayout({
        "header": command_header_layout(),
        "rows": 32, "static_base": 32, "_pad": 32,
        "src_addr": ADDR_WIDTH,
    })


def stage_layout(config: AccelConfig) -> data.StructLayout:
    """One stage of a query: the model slot, how many to keep, the partitions that run it
    (their sub-batches dealt over them; with ``gang`` one gang of them, an aligned block of
    ``G`` partitions in ``gang_sizes``, running every layer with its columns split) and the
    top-k unit that filters it."""
    return data.StructLayout({
        "slot": 4, "partition_mask": 4, "topk_unit": 4, "gang": 1, "_pad": 3,
        "k": 16,
    })


def run_query_layout(config: AccelConfig) -> data.StructLayout:
    """``RUN_QUERY``: rank ``n_candidates`` records at ``records_addr`` through
    ``n_stages`` stages; results to ``result_addr`` (and every stage's kept list to
    ``kept_addr`` unless it is 0)."""
    return data.StructLayout({
        "header": command_header_layout(),
        "n_candidates": 32,
        "n_stages": 8, "_pad": 24,
        "records_addr": ADDR_WIDTH, "result_addr": ADDR_WIDTH, "kept_addr": ADDR_WIDTH,
        "stages": data.ArrayLayout(stage_layout(config), config.max_stages),
    })


def completion_layout(config: AccelConfig) -> data.StructLayout:
    """Written for every ring entry: its ``tag`` and ``index``, the ``error`` code
    (``hw/regmap.ERROR_CODES``, 0 = success), how many candidates each stage kept and the
    cycles each stage took (from its first record fetch to its last kept result), and the
    entry's total cycles from fetch to completion."""
    return data.StructLayout({
        "tag": 16, "index": 16,
        "error": 8, "n_stages": 8, "_pad": 16,
        "total_cycles": 32,
        "kept": data.ArrayLayout(16, config.max_stages),
        "stage_cycles": data.ArrayLayout(32, config.max_stages),
    })


def layer_layout(config: AccelConfig) -> data.StructLayout:
    """One MLP layer of a loaded model: its shape, where its weight tiles and bias words
    start in the engine memories, its requantization, ReLU, and whether it is the score
    layer (one output, the int32 accumulator is the score)."""
    return data.StructLayout({
        "in_dim": 16, "out_dim": 16, "weight_tile": 16, "bias_word": 16,
        "mult": 24, "shift": 6, "relu": 1, "score": 1,
        "_pad": 32,
    })


def table_layout(config: AccelConfig) -> data.StructLayout:
    """One embedding table of a loaded model: ``rows`` rows of ``row_bytes`` bytes (``dim``
    int8 elements, zero padded) at ``base_addr``; its first ``static_rows`` rows (the host
    stores rows hottest first) are in the static cache from row ``static_base`` on."""
    return data.StructLayout({
        "base_addr": ADDR_WIDTH, "rows": 32, "row_bytes": 16, "dim": 16,
        "static_rows": 32, "static_base": 32,
    })


def pair_layout(config: AccelConfig) -> data.StructLayout:
    """One interaction pair's requantization."""
    return data.StructLayout({"mult": 24, "shift": 8})


def lookup_layout(config: AccelConfig) -> data.StructLayout:
    """One embedding lookup of a record: the row (in the hot-first order of its table),
    ``bag_end`` on the last row of a table's bag."""
    return data.StructLayout({"row": 31, "bag_end": 1})


def record_layout(config: AccelConfig) -> data.StructLayout:
    """One candidate: its item id (for reference; the accelerator does not use it), the
    number of lookups, the dense int8 codes and the lookups."""
    return data.StructLayout({
        "item": 32, "n_lookups": 8, "n_dense": 8, "_pad": 16,
        "dense": data.ArrayLayout(signed(config.operand_width), config.max_dense),
        "lookups": data.ArrayLayout(lookup_layout(config), config.max_lookups),
    })


def record_bytes(config: AccelConfig) -> int:
    """Bytes of one candidate record: its layout rounded up to a power of two (so a record
    never straddles a 4 KiB page) and to at least one bus word."""
    width = record_layout(config).size
    size = max(-(-width // 8), config.mem_bus_width // 8)
    return 1 << (size - 1).bit_length()


def result_layout(config: AccelConfig) -> data.StructLayout:
    """One kept candidate: its position in the query's records and its score."""
    return data.StructLayout({"position": 32, "score": signed(32)})


def command_layouts(config: AccelConfig) -> dict[str, data.StructLayout]:
    return {"LOAD_MODEL": load_model_layout(config), "LOAD_STATIC": load_static_layout(config),
            "RUN_QUERY": run_query_layout(config)}


def layout_bytes(layout) -> int:
    return -(-data.Layout.cast(layout).size // 8)


def pack(layout, value: dict, size: int | None = None) -> bytes:
    """``value`` (a dict of fields) as little-endian bytes of ``size`` (default: the
    layout's size rounded up to bytes); raises if the layout does not fit."""
    layout = data.Layout.cast(layout)
    n = layout_bytes(layout) if size is None else size
    if layout.size > 8 * n:
        raise ValueError(f"a {layout.size}-bit layout does not fit {n} bytes")
    return layout.const(value).as_bits().to_bytes(n, "little")


def unpack(layout, raw: bytes) -> dict:
    """The fields of ``layout`` in little-endian ``raw`` (plain ints, dicts and lists)."""
    layout = data.Layout.cast(layout)
    bits = int.from_bytes(raw, "little") & ((1 << layout.size) - 1)
    return _to_python(layout, bits)


def _to_python(layout, bits: int):
    if isinstance(layout, data.StructLayout):
        return {name: _to_python(f.shape, (bits >> f.offset) & ((1 << f.width) - 1))
                for name, f in layout}
    if isinstance(layout, data.ArrayLayout):
        w = _width(layout.elem_shape)
        return [_to_python(layout.elem_shape, (bits >> (i * w)) & ((1 << w) - 1))
                for i in range(layout.length)]
    shape = Shape.cast(layout)
    if shape.signed and bits >> (shape.width - 1):
        return bits - (1 << shape.width)
    return bits


def _width(shape) -> int:
    if isinstance(shape, data.Layout):
        return shape.size
    return Shape.cast(shape).width
