"""``rpaccel cache-study``: hit rate and memory bytes per query of the embedding caches against
capacity on real MovieLens cascade traffic and one synthetic large-table Zipf trace.

:func:`register` adds the command (``gen/cli.py`` calls it); the study itself is
``rpaccel.sim.cache_study`` and uses the exact cache model (the RTL's counters).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

__all__ = ["register", "cmd_cache_study", "plot_study", "format_study"]

#: Total cache capacities (rows) swept on MovieLens (its tables hold about 2,700 rows per model).
ML_CAPACITIES = (64, 128, 256, 512, 1024, 2048)
#: Capacities swept on the Zipf trace (8 tables of 10**6 rows).
ZIPF_CAPACITIES = (1024, 4096, 16384, 65536)
#: Capacities at which the dynamic cache's split between stages is swept.
SPLIT_AT = (256, 1024)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def format_study(result: dict) -> str:
    lines = []
    for name, entry in result["traffic"].items():
        lines.append(f"{name}: {entry['queries']} queries, {entry['lookups']} lookups, "
                     f"{entry['table_rows']} table rows")
        lines.append(f"  {'rows':>6}  {'static':>15}  {'dynamic':>15}  {'static+dynamic':>15}"
                     f"   (hit rate, KiB/query)")
        for i, cap in enumerate(entry["capacities"]):
            cells = []
            for kind in ("static_only", "dynamic_only", "static_dynamic"):
                r = entry[kind][i]
                cells.append(f"{r['hit_rate']:6.3f} {r['bytes_per_query'] / 1024:8.1f}")
            lines.append(f"  {cap:>6}  " + "  ".join(cells))
        for split in entry["split"]:
            cap = split[0]["dynamic_rows"]
            cells = [f"stage-1 ways {r['stage0_ways']}/{result['ways']}: {r['hit_rate']:.3f} "
                     f"{r['bytes_per_query'] / 1024:.1f} KiB" for r in split]
            lines.append(f"  split of {cap} dynamic rows: " + "; ".join(cells))
    return "\n".join(lines)


def plot_study(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["traffic"])
    fig, axes = plt.subplots(len(names), 2, figsize=(11, 3.4 * len(names)), squeeze=False)
    styles = {"static_only": ("static only", "o-"), "dynamic_only": ("dynamic only", "s-"),
              "static_dynamic": ("static + dynamic (equal rows)", "^-")}
    for row, name in enumerate(names):
        entry = result["traffic"][name]
        caps = entry["capacities"]
        for kind, (label, style) in styles.items():
            axes[row][0].plot(caps, [r["hit_rate"] for r in entry[kind]], style, label=label)
            axes[row][1].plot(caps, [r["bytes_per_query"] / 1024 for r in entry[kind]], style,
                              label=label)
        for split in entry["split"]:
            cap = split[0]["dynamic_rows"]
            for r in split:
                axes[row][0].plot([cap], [r["hit_rate"]], "kx")
                axes[row][1].plot([cap], [r["bytes_per_query"] / 1024], "kx")
        axes[row][0].set_title(f"{name}: hit rate")
        axes[row][1].set_title(f"{name}: memory KiB per query")
        for ax in axes[row]:
            ax.set_xscale("log", base=2)
            ax.set_xlabel("cache capacity (rows)")
            ax.grid(True, alpha=0.3)
        axes[row][0].legend(fontsize=8)
    if any(result["traffic"][n]["split"] for n in names):
        fig.text(0.01, 0.005, "x: dynamic-only with its ways split between stage 1 and the "
                 "later stages (1..ways-1 ways to stage 1)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cmd_cache_study(args) -> int:
    import numpy as np

    from rpaccel.hw.errors import RpaccelError
    from rpaccel.sim.cache_study import cascade_traffic, study, zipf_traffic
    from rpaccel.sim.golden import load_golden

    from .options import check_data_root, check_output_file, config_from_args

    if args.users < 1:
        raise RpaccelError(f"--users must be at least 1, not {args.users}")
    config, _ = config_from_args(args)
    check_output_file(args.json, "--json")
    check_output_file(args.plot, "--plot")
    check_data_root(models=True)
    started = time.monotonic()
    setup = load_golden(progress=_say)
    n_users = setup.split.n_users
    users = sorted(set(np.linspace(0, n_users - 1, min(args.users, n_users)).astype(int)))
    traffics = []
    for pipeline in ("2-stage", "3-stage"):
        _say(f"cascade traffic of {pipeline} over {len(users)} test users")
        traffics.append(cascade_traffic(setup, pipeline, users))
    result = {"config": config.hash, "users": [int(u) for u in users], "traffic": {}}
    for tr in traffics:
        _say(f"simulating {tr.name}: {len(tr.lookups)} lookups")
        part = study([tr], config, list(ML_CAPACITIES), ways=config.dynamic_cache_ways)
        part["traffic"][tr.name]["split"] = [
            s for s, cap in zip(part["traffic"][tr.name]["split"], ML_CAPACITIES)
            if cap in SPLIT_AT]
        result["traffic"].update(part["traffic"])
        result["ways"] = part["ways"]
    if not args.skip_zipf:
        tr = zipf_traffic(seed=args.seed)
        _say(f"simulating {tr.name}: {len(tr.lookups)} lookups")
        part = study([tr], config, list(ZIPF_CAPACITIES), ways=config.dynamic_cache_ways)
        result["traffic"].update(part["traffic"])
    print(format_study(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
        print(f"wrote {args.json}")
    if args.plot is not None:
        plot_study(result, args.plot)
        print(f"wrote {args.plot}")
    _say(f"cache study took {time.monotonic() - started:.0f} s")
    return 0


def register(sub) -> None:
    """Add ``cache-study`` to the ``rpaccel`` sub-command parser."""
    from .options import add_config_options

    p = sub.add_parser("cache-study", help="embedding-cache hit rate and memory traffic "
                       "against capacity on MovieLens cascade traffic and a Zipf trace")
    add_config_options(p)
    p.add_argument("--json", type=Path, help="write the results as JSON here")
    p.add_argument("--plot", type=Path, help="write the curves as a PNG here")
    p.add_argument("--users", type=int, default=24,
                   help="test users, evenly spread over all users (default 24)")
    p.add_argument("--seed", type=int, default=2021, help="seed of the Zipf trace")
    p.add_argument("--skip-zipf", action="store_true", help="leave out the Zipf trace")
    p.set_defaults(func=cmd_cache_study)
