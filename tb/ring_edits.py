"""Bad-input stimulus for the top level: rewrite fields of a planned ring entry in its memory
image, so a test can put a bad query between good ones (shared by the scheduler's tests on
the functional model and the RTL cosimulation tests)."""

from __future__ import annotations

import re

from rpaccel.hw import descriptors as d

__all__ = ["corrupt_entry"]


def corrupt_entry(plan, index: int, layout, **changes) -> None:
    """Rewrite fields of ring entry ``index`` of ``plan`` (a scheduler plan) in its image.
    ``layout`` is the entry's layout (``descriptors.run_query_layout(config)``); a key
    ``stage<s>_<field>`` changes stage ``s``'s field, ``opcode`` the header's, any other
    key the entry's own field."""
    addr = plan.ring.ring_base + index * d.COMMAND_BYTES
    value = d.unpack(layout, plan.image.read(addr, d.COMMAND_BYTES))
    for key, v in changes.items():
        stage = re.fullmatch(r"stage(\d+)_(\w+)", key)
        if stage:
            value["stages"][int(stage[1])][stage[2]] = v
        elif key == "opcode":
            value["header"]["opcode"] = v
        else:
            value[key] = v
    plan.image.write(addr, d.pack(layout, value, d.COMMAND_BYTES))
