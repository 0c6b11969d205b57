"""The functional model of the RPAccel top level: the golden backend of the scheduler.

:class:`AccelModel` executes a command ring on a :class:`~rpaccel.sim.scheduler.MemoryImage`
exactly as the top level defines it (``hw/descriptors.py``), reading every descriptor,
table row, weight word and record from memory and computing with
:mod:`rpaccel.sim.numerics` only: ``LOAD_MODEL`` fills the named partitions' weight and
bias memories, the model's layer, table and interaction descriptors; ``LOAD_STATIC`` fills
the static cache; ``RUN_QUERY`` runs the cascade (records -> dense codes and pooled
embeddings -> bottom MLP -> interaction -> top MLP -> score -> top-k of positions -> the
next stage) and writes kept lists, results and a completion. It has no notion of time
(cycle counts are 0) nor of mapping: a stage's values do not depend on the partitions its
sub-batches are dealt over (each holds the model's same words; the lowest one's are read)
nor on the top-k unit, nor on which queries were in flight beside it. A ganged stage's
layers are put back together from its gang's slices (``mlp_program.gang_unslice``), so a
stage's values do not depend on ganging either. Values, error codes and memory writes are
what the RTL must produce.

Without on-chip top-k (``onchip_topk`` off) a query has one stage (more is ``BAD_STAGES``)
and its result is every candidate's record (position, score) in candidate order at
``result_addr``, checked for ``n_candidates * 8`` bytes; no kept list is written and the
completion's ``kept`` is the candidate count.

Bad commands follow ``hw/regmap.ERROR_CODES``: the entry is rejected with its code in the
completion (and nothing else written), and the next entry runs normally. An embedding
lookup outside its table, or a bag with no rows, pools to zeros and sets ``EMBEDDING`` in
the completion, while the query still completes (its results are written).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rpaccel.hw import descriptors as d
from rpaccel.hw.command import MAX_LAYERS, engine_word_bytes
from rpaccel.hw.config import AccelConfig
from rpaccel.hw.geometry import EngineGeometry
from rpaccel.hw.interaction import pairs_max
from rpaccel.hw.mlp_engine import gang_masks
from rpaccel.hw.regmap import ERROR_CODES

from . import numerics
from .mlp_program import IntLayer, gang_unslice, reference_mlp, unpack_bias, unpack_weights

__all__ = ["AccelModel", "ERROR"]

#: Error code by name.
ERROR = {name: code for code, (name, _) in ERROR_CODES.items()}


class Rejected(Exception):
    def __init__(self, code: str):
        self.code = ERROR[code]


@dataclass
class LoadedModel:
    partitions: int
    bottom: list
    top: list
    tables: list
    mults: np.ndarray
    shifts: np.ndarray
    emb_dim: int
    n_dense: int
    ganged: bool = False


class AccelModel:
    """Executes ring entries; see the module docstring."""

    name = "functional model"

    def __init__(self, config: AccelConfig):
        self.config = config
        self.geo = EngineGeometry.of(config)
        g = self.geo
        cfg = config
        self.weights = [np.zeros((g.weight_words, g.cols), dtype=np.int64)
                        for _ in range(cfg.partitions)]
        self.biases = [np.zeros((g.bias_words, g.cols), dtype=np.int64)
                       for _ in range(cfg.partitions)]
        self.static = np.zeros((cfg.static_cache_rows, cfg.emb_dim_max), dtype=np.int64)
        self.models: dict[int, LoadedModel] = {}
        self.slot_gangs: dict[int, tuple[bool, int]] = {}   # slot -> (ganged, mask) loaded
        self.lookups = {"static_hits": 0, "memory": 0, "errors": 0}

    # -- memory helpers ----------------------------------------------------------------------
    def _check(self, ring, addr: int, nbytes: int):
        if addr < ring.region_base or addr + nbytes > ring.region_base + ring.region_size:
            raise Rejected("ADDRESS_RANGE")

    def _lanes(self, image, addr: int, n_words: int, lanes: int, width: int) -> np.ndarray:
        nbytes = engine_word_bytes(lanes * width)
        raw = image.read(addr, n_words * nbytes)
        out = np.zeros((n_words, lanes), dtype=np.int64)
        mask, sign = (1 << width) - 1, 1 << (width - 1)
        for w in range(n_words):
            value = int.from_bytes(raw[w * nbytes:(w + 1) * nbytes], "little")
            for i in range(lanes):
                v = (value >> (i * width)) & mask
                out[w, i] = v - (1 << width) if v & sign else v
        return out

    # -- commands ----------------------------------------------------------------------------
    def execute(self, image, ring) -> int:
        cfg = self.config
        size = 1 << ring.ring_log2
        while ring.head != ring.tail:
            index = ring.head % size
            raw = image.read(ring.ring_base + index * d.COMMAND_BYTES, d.COMMAND_BYTES)
            header = d.unpack(d.command_header_layout(), raw)
            completion = {"tag": header["tag"], "index": index, "error": 0, "n_stages": 0,
                          "total_cycles": 0, "kept": [0] * cfg.max_stages,
                          "stage_cycles": [0] * cfg.max_stages}
            try:
                op = header["opcode"]
                if op == d.OPCODES["NOP"]:
                    pass
                elif op == d.OPCODES["LOAD_MODEL"]:
                    self._load_model(image, ring, d.unpack(d.load_model_layout(cfg), raw))
                elif op == d.OPCODES["LOAD_STATIC"]:
                    self._load_static(image, ring, d.unpack(d.load_static_layout(cfg), raw))
                elif op == d.OPCODES["RUN_QUERY"]:
                    self._run_query(image, ring, d.unpack(d.run_query_layout(cfg), raw),
                                    completion)
                else:
                    raise Rejected("BAD_OPCODE")
            except Rejected as rej:
                completion.update(error=rej.code, n_stages=0, kept=[0] * cfg.max_stages)
            image.write(ring.completion_base + index * d.COMPLETION_BYTES,
                        d.pack(d.completion_layout(cfg), completion, d.COMPLETION_BYTES))
            ring.head = (ring.head + 1) & 0xFFFF
        return ring.head

    def _load_model(self, image, ring, c):
        cfg, g = self.config, self.geo
        mask = c["partition_mask"]
        if c["slot"] >= cfg.model_slots or mask == 0 or mask >> cfg.partitions:
            raise Rejected("BAD_PARTITION")
        n_layers = c["n_bottom"] + c["n_top"]
        if (c["weight_word_base"] + c["weight_words"] > g.weight_words or
                c["bias_word_base"] + c["bias_words"] > g.bias_words or
                c["n_tables"] > cfg.max_tables or c["emb_dim"] > cfg.emb_dim_max or
                c["n_dense"] > cfg.max_dense or n_layers > MAX_LAYERS or
                c["n_pairs"] > pairs_max(cfg)):
            raise Rejected("BAD_PARTITION")
        w_bytes = engine_word_bytes(g.cols * cfg.operand_width)
        b_bytes = engine_word_bytes(g.cols * cfg.acc_width)
        for addr, n in ((c["weights_addr"], c["weight_words"] * w_bytes),
                        (c["bias_addr"], c["bias_words"] * b_bytes),
                        (c["layers_addr"], n_layers * d.LAYER_BYTES),
                        (c["tables_addr"], c["n_tables"] * d.TABLE_BYTES),
                        (c["pairs_addr"], c["n_pairs"] * d.PAIR_BYTES)):
            self._check(ring, addr, n)
        words = self._lanes(image, c["weights_addr"], c["weight_words"], g.cols,
                            cfg.operand_width)
        biases = self._lanes(image, c["bias_addr"], c["bias_words"], g.cols, cfg.acc_width)
        for p in range(cfg.partitions):
            if mask >> p & 1:
                wb, bb = c["weight_word_base"], c["bias_word_base"]
                self.weights[p][wb:wb + len(words)] = words
                self.biases[p][bb:bb + len(biases)] = biases
        layers = [d.unpack(d.layer_layout(cfg), image.read(c["layers_addr"] + i * d.LAYER_BYTES,
                                                          d.LAYER_BYTES))
                  for i in range(n_layers)]
        if any(self._layer_refused(layer) for layer in layers):
            # as the hardware: the slot's earlier model is gone (its layers were overwritten),
            # the engines' weight memories hold the new words
            self.models.pop(c["slot"], None)
            raise Rejected("BAD_LAYER")
        tables = [d.unpack(d.table_layout(cfg), image.read(c["tables_addr"] + i * d.TABLE_BYTES,
                                                          d.TABLE_BYTES))
                  for i in range(c["n_tables"])]
        pairs = [d.unpack(d.pair_layout(cfg), image.read(c["pairs_addr"] + i * d.PAIR_BYTES,
                                                        d.PAIR_BYTES))
                 for i in range(c["n_pairs"])]
        # a gang member's slice adds its partition to the slot's earlier gang loads (as the
        # hardware: what the slot's last good load left, whether or not a failed load came
        # after it)
        ganged = bool(c["header"]["flags"] & d.LOAD_MODEL_GANG)
        was_ganged, was_mask = self.slot_gangs.get(c["slot"], (False, 0))
        if ganged and was_ganged:
            mask |= was_mask
        self.slot_gangs[c["slot"]] = (ganged, mask)
        self.models[c["slot"]] = LoadedModel(
            ganged=ganged,
            partitions=mask, bottom=layers[:c["n_bottom"]], top=layers[c["n_bottom"]:],
            tables=tables, mults=np.array([p["mult"] for p in pairs], dtype=np.int64),
            shifts=np.array([p["shift"] for p in pairs], dtype=np.int64),
            emb_dim=c["emb_dim"], n_dense=c["n_dense"])

    def _layer_refused(self, layer: dict) -> bool:
        """A layer the MLP engines refuse (``hw/mlp_engine.layer_refused``)."""
        g = self.geo
        return (not 1 <= layer["in_dim"] <= g.max_layer_dim or
                not 1 <= layer["out_dim"] <= g.max_layer_dim or
                layer["weight_tile"] + g.weight_tiles(layer["in_dim"], layer["out_dim"])
                > g.weight_words // g.rows or
                layer["bias_word"] + g.out_tiles(layer["out_dim"]) > g.bias_words or
                (layer["score"] and layer["out_dim"] != 1))

    def _load_static(self, image, ring, c):
        cfg = self.config
        if c["static_base"] + c["rows"] > cfg.static_cache_rows:
            raise Rejected("ADDRESS_RANGE")
        self._check(ring, c["src_addr"], c["rows"] * cfg.emb_dim_max)
        rows = np.frombuffer(image.read(c["src_addr"], c["rows"] * cfg.emb_dim_max),
                             dtype=np.int8).astype(np.int64)
        self.static[c["static_base"]:c["static_base"] + c["rows"]] = \
            rows.reshape(c["rows"], cfg.emb_dim_max)

    # -- a query ------------------------------------------------------------------------------
    def _layers(self, p: int, descs: list) -> list[IntLayer]:
        """The IntLayers of a partition's engine as the descriptors and its memories hold
        them (weights unpacked from the engine's tile order)."""
        g = self.geo
        layers = []
        for ds in descs:
            n_in, n_out = ds["in_dim"], ds["out_dim"]
            tiles = g.weight_tiles(n_in, n_out)
            words = self.weights[p][ds["weight_tile"] * g.rows:(ds["weight_tile"] + tiles) * g.rows]
            biases = self.biases[p][ds["bias_word"]:ds["bias_word"] + g.out_tiles(n_out)]
            layers.append(IntLayer(w=unpack_weights(words, n_in, n_out, g),
                                   bias=unpack_bias(biases, n_out), mult=ds["mult"],
                                   shift=ds["shift"], relu=bool(ds["relu"]),
                                   score=bool(ds["score"])))
        return layers

    def _gang_layers(self, mask: int, model: LoadedModel) -> tuple[list, list]:
        """A ganged model's bottom and top layers, each put together from the slices its
        gang's memories hold (its outputs: the next layer's inputs; the bottom MLP's last
        layer, the embedding dimension)."""
        members = [p for p in range(self.config.partitions) if mask >> p & 1]
        mlps = []
        for descs, last in ((model.bottom, model.emb_dim), (model.top, 1)):
            slices = [self._layers(p, descs) for p in members]
            outs = [ds["in_dim"] for ds in descs[1:]] + [last]
            mlps.append([gang_unslice([s[n] for s in slices], outs[n], self.geo)
                         for n in range(len(descs))])
        return mlps[0], mlps[1]

    def _embeddings(self, image, model: LoadedModel, record: dict) -> tuple[np.ndarray, bool]:
        """The pooled (tables, emb_dim) vectors of one record, and whether a lookup was bad."""
        D = model.emb_dim
        out = np.zeros((len(model.tables), D), dtype=np.int64)
        bad = False
        lookups = record["lookups"][:record["n_lookups"]]
        t, bag = 0, []
        for lk in lookups:
            if t >= len(model.tables):
                bad = True
                break
            table = model.tables[t]
            row = lk["row"]
            if row >= table["rows"]:
                bad = True
                self.lookups["errors"] += 1
            elif row < table["static_rows"]:
                bag.append(self.static[table["static_base"] + row, :D])
                self.lookups["static_hits"] += 1
            else:
                raw = image.read(table["base_addr"] + row * table["row_bytes"], D)
                bag.append(np.frombuffer(raw, dtype=np.int8).astype(np.int64))
                self.lookups["memory"] += 1
            if lk["bag_end"]:
                out[t] = numerics.pool_sum(np.array(bag).reshape(-1, D)) if bag else 0
                t, bag = t + 1, []
        if t < len(model.tables):    # a table without rows (an empty bag) pools to zeros
            bad = True
        return out, bad

    def _entries(self, positions, scores) -> bytes:
        return b"".join(d.pack(d.result_layout(self.config), {"position": int(q), "score": int(v)},
                               d.RESULT_BYTES) for q, v in zip(positions, scores))

    def _run_query(self, image, ring, c, completion):
        cfg = self.config
        n, n_stages = c["n_candidates"], c["n_stages"]
        # without on-chip top-k a query is one stage (the host filters between stages)
        if not 1 <= n_stages <= (cfg.max_stages if cfg.onchip_topk else 1):
            raise Rejected("BAD_STAGES")
        if n == 0:
            raise Rejected("ZERO_CANDIDATES")
        stages = c["stages"][:n_stages]
        size = d.record_bytes(cfg)
        self._check(ring, c["records_addr"], n * size)
        results = stages[-1]["k"] if cfg.onchip_topk else n      # kept list, or every score
        self._check(ring, c["result_addr"], results * d.RESULT_BYTES)
        if c["kept_addr"]:
            self._check(ring, c["kept_addr"], n_stages * cfg.topk_max * d.RESULT_BYTES)
        inputs = n
        for st in stages:
            model = self.models.get(st["slot"])
            if model is None:
                raise Rejected("MODEL_NOT_LOADED")
            mask = st["partition_mask"]
            if mask == 0 or mask >> cfg.partitions or st["topk_unit"] >= cfg.topk_units or \
                    (st["gang"] and mask not in gang_masks(cfg)):
                raise Rejected("BAD_PARTITION")
            if mask & ~model.partitions or bool(st["gang"]) != model.ganged or \
                    (st["gang"] and mask != model.partitions):
                raise Rejected("MODEL_NOT_LOADED")
            if not 1 <= st["k"] <= min(cfg.topk_max, inputs):
                raise Rejected("BAD_K")
            inputs = st["k"]
        if n > 1 << cfg.id_width:
            raise Rejected("BAD_K")
        layout = d.record_layout(cfg)
        records = [d.unpack(layout, image.read(c["records_addr"] + i * size, size))
                   for i in range(n)]
        positions = np.arange(n)
        error = 0
        for s, st in enumerate(stages):
            model = self.models[st["slot"]]
            if st["gang"]:
                bottom, top = self._gang_layers(st["partition_mask"], model)
            else:
                p = (st["partition_mask"] & -st["partition_mask"]).bit_length() - 1
                bottom, top = self._layers(p, model.bottom), self._layers(p, model.top)
            dense = np.array([records[i]["dense"][:model.n_dense] for i in positions])
            h = reference_mlp(dense, bottom)
            emb = []
            for i in positions:
                vec, bad = self._embeddings(image, model, records[i])
                emb.append(vec)
                if bad:
                    error = ERROR["EMBEDDING"]
            z = np.concatenate([h[:, None, :], np.array(emb)], axis=1)
            inter = numerics.interaction(z, model.mults, model.shifts)
            scores = reference_mlp(np.concatenate([h, inter], axis=1), top)
            if not cfg.onchip_topk:
                # every candidate's score, in candidate order, at the result address
                image.write(c["result_addr"], self._entries(positions, scores))
                completion["kept"][s] = len(positions)
                continue
            order = numerics.topk(scores, positions, st["k"])
            kept, kept_scores = positions[order], scores[order]
            entries = self._entries(kept, kept_scores)
            if c["kept_addr"]:
                image.write(c["kept_addr"] + s * cfg.topk_max * d.RESULT_BYTES, entries)
            if s == len(stages) - 1:
                image.write(c["result_addr"], entries)
            completion["kept"][s] = len(kept)
            positions = kept
        completion["n_stages"] = n_stages
        completion["error"] = error
