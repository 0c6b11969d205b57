"""AccelConfig: presets, validation messages, hashing, TOML round trip."""

import os
import subprocess
import sys

import pytest

from rpaccel.hw.config import DEFAULT, PRESETS, AccelConfig, ConfigError, load_toml, preset


def test_presets_are_valid_and_named_as_documented():
    assert set(PRESETS) == {"tiny", "small", "default", "paper"}
    assert (PRESETS["tiny"].rows, PRESETS["tiny"].cols) == (4, 4)
    assert (PRESETS["default"].rows, PRESETS["default"].cols) == (8, 8)
    assert (PRESETS["paper"].rows, PRESETS["paper"].cols) == (128, 128)
    assert len({c.hash for c in PRESETS.values()}) == len(PRESETS)


def test_config_is_frozen_and_keyword_only():
    with pytest.raises(Exception):
        DEFAULT.rows = 4
    with pytest.raises(TypeError):
        AccelConfig(8, 8)


@pytest.mark.parametrize("changes, message", [
    ({"rows": 3}, "rows must be a power of two between 2 and 256, not 3"),
    ({"cols": 512}, "cols must be a power of two between 2 and 256, not 512"),
    ({"rows": "8"}, "rows must be an integer, not '8'"),
    ({"rows": True}, "rows must be an integer, not True"),
    ({"partitions": 3}, "partitions must be 1, 2 or 4, not 3"),
    ({"cols": 4, "partitions": 4},
     "partitions must be a divisor of cols=4 leaving at least 2 columns each, not 4"),
    ({"operand_width": 2}, "operand_width must be between 4 and 16, not 2"),
    ({"acc_width": 16}, "acc_width must be between 2*operand_width+4=20 and 48, not 16"),
    ({"sub_batch": 0}, "sub_batch must be between 1 and 4096, not 0"),
    ({"max_layer_dim": 100}, "max_layer_dim must be a multiple of rows=8 up to 8192, not 100"),
    ({"weight_capacity": 100},
     "weight_capacity must be a positive multiple of one weight tile (32 elements), not 100"),
    ({"static_cache_rows": -1}, "static_cache_rows must be between 0 and 1048576, not -1"),
    ({"dynamic_cache_sets": 3}, "dynamic_cache_sets must be zero or a power of two, not 3"),
    ({"dynamic_cache_ways": 0}, "dynamic_cache_ways must be between 1 and 16, not 0"),
    ({"topk_max": 0}, "topk_max must be between 1 and 4096, not 0"),
    ({"topk_lutram_words": 1}, "topk_lutram_words must be between 2 and 4096, not 1"),
    ({"topk_heaps": 3}, "topk_heaps must be 1 or 2, not 3"),
    ({"topk_units": 1}, "topk_units must be between partitions=2 and 16, not 1"),
    ({"mem_bus_width": 100}, "mem_bus_width must be a power of two between 32 and 1024, not 100"),
    ({"interaction_lanes": 64},
     "interaction_lanes must be a power of two no larger than emb_dim_max=32, not 64"),
    ({"clock_mhz": 0.5}, "clock_mhz must be between 1 and 2000, not 0.5"),
])
def test_invalid_values_name_field_and_value(changes, message):
    with pytest.raises(ConfigError) as err:
        DEFAULT.replace(**changes)
    assert str(err.value) == message


def test_unknown_field_and_preset():
    with pytest.raises(ConfigError, match="unknown field 'rowz'"):
        DEFAULT.replace(rowz=4)
    with pytest.raises(ConfigError, match="unknown preset 'huge'; known presets: tiny, small"):
        preset("huge")


def test_hash_is_stable_across_processes():
    code = "from rpaccel.hw.config import PRESETS; print(PRESETS['tiny'].hash)"
    hashes = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}, check=True).stdout
              for seed in ("1", "2", "3")}
    assert hashes == {PRESETS["tiny"].hash + "\n"}
    assert DEFAULT.replace(rows=16).hash != DEFAULT.hash


def test_toml_round_trip_and_preset_key(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(PRESETS["small"].to_toml())
    assert load_toml(path) == PRESETS["small"]
    path.write_text('preset = "tiny"\nsub_batch = 8\n')
    assert load_toml(path) == PRESETS["tiny"].replace(sub_batch=8)


def test_toml_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file .*missing.toml"):
        load_toml(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("rows = \n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_toml(bad)
    bad.write_text("[array]\nrows = 4\n")
    with pytest.raises(ConfigError, match=r"tables are not supported \(\[array\]\)"):
        load_toml(bad)


def test_equal_configurations_have_equal_hashes(tmp_path):
    as_int = DEFAULT.replace(clock_mhz=125)
    assert as_int == DEFAULT and as_int.hash == DEFAULT.hash
    assert isinstance(as_int.clock_mhz, float) and as_int.to_dict() == DEFAULT.to_dict()
    hashes = set()
    for text in ("clock_mhz = 125\n", "clock_mhz = 125.0\n", 'preset = "default"\n', ""):
        path = tmp_path / "c.toml"
        path.write_text(text)
        hashes.add(load_toml(path).hash)
    assert hashes == {DEFAULT.hash}
    assert DEFAULT.replace(clock_mhz=125.5).hash != DEFAULT.hash


def test_unknown_field_lists_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError) as err:
        DEFAULT.replace(rowz=4)
    assert str(err.value) == ("unknown field 'rowz'; valid fields: "
                              + ", ".join(DEFAULT.to_dict()))
    path = tmp_path / "my.toml"
    path.write_text("rowz = 4\n")
    with pytest.raises(ConfigError, match=r"^config file '.*my\.toml': unknown field 'rowz'; "
                                          r"valid fields: rows, cols"):
        load_toml(path)


def test_toml_encoding_and_preset_type_errors(tmp_path):
    path = tmp_path / "c.toml"
    path.write_bytes("rows = 4 # größe\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"c\.toml' is not UTF-8 text \(byte 0xf6 at offset "
                                          r"13\): TOML files are UTF-8$"):
        load_toml(path)
    path.write_text('preset = ["tiny"]\n')
    with pytest.raises(ConfigError, match=r"preset must be a preset name \(tiny, small, "
                                          r"default, paper\), not \['tiny'\]$"):
        load_toml(path)
    path.write_text('preset = "tiny"\nrows = 3\n')
    with pytest.raises(ConfigError, match=r"c\.toml': rows must be a power of two"):
        load_toml(path)


def test_feature_switches_are_booleans_and_round_trip(tmp_path):
    off = PRESETS["tiny"].replace(subbatch_overlap=False, onchip_topk=False)
    assert off.hash != PRESETS["tiny"].hash
    path = tmp_path / "off.toml"
    path.write_text(off.to_toml())
    assert "subbatch_overlap = false" in path.read_text()
    assert load_toml(path) == off
    for name in ("subbatch_overlap", "onchip_topk"):
        with pytest.raises(ConfigError, match=f"{name} must be true or false, not 1"):
            DEFAULT.replace(**{name: 1})
