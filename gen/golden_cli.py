"""The ``rpaccel data``, ``rpaccel train`` and ``rpaccel eval`` commands.

:func:`register` adds them to the ``rpaccel`` parser (``gen/cli.py`` calls it); the heavy
imports happen only when a command runs, so the CLI starts fast.
"""

from __future__ import annotations

import time
from pathlib import Path

from .options import check_data_root, check_output_file, positive_int, say as _say

__all__ = ["register", "cmd_data", "cmd_train", "cmd_eval"]


def cmd_data(args) -> int:
    from rpaccel.sim.data import FILES, ensure_dataset
    check_data_root(models=False)
    folder = ensure_dataset(progress=_say)
    print(f"MovieLens-100K verified in {folder} ({', '.join(FILES)}; sha256 checked)")
    return 0


def cmd_train(args) -> int:
    from rpaccel.sim.blas import blas_threads
    from rpaccel.sim.data import load_movielens
    from rpaccel.sim.features import build_features, split_interactions
    from rpaccel.sim.models import (MODEL_NAMES, SPECS, TRAIN_CONFIGS, artifact_paths, train_hash,
                         train_or_load)

    check_data_root(models=not args.force, need_write=args.force)
    ml = load_movielens()
    split = split_interactions(ml)
    features = build_features(ml, split)
    progress = _say if args.verbose else None
    for name in MODEL_NAMES:
        thash = train_hash(SPECS[name], TRAIN_CONFIGS[name], split.seed)
        reuse = artifact_paths(name, thash)[1].exists() and not args.force
        t0 = time.perf_counter()
        _say(f"{name}: {'loading' if reuse else 'training'} ...")
        with blas_threads(1):
            _, meta = train_or_load(name, features, split, force=args.force, progress=progress)
        took = time.perf_counter() - t0
        how = (f"loaded in {took:.1f} s (trained in {meta['train_seconds']:.1f} s)" if reuse
               else f"trained in {took:.1f} s")
        print(f"{name:6s} [{SPECS[name].describe()}] {how}, final loss "
              f"{meta['final_loss']:.4f}, artifact {thash}")
    return 0


def cmd_eval(args) -> int:
    from rpaccel.sim.evaluate import evaluate_quality, format_report, write_report
    from rpaccel.sim.golden import load_golden

    check_output_file(args.json, "--json")
    check_data_root(models=True)
    setup = load_golden(progress=_say)
    users = None
    if args.users is not None:
        users = list(range(min(args.users, setup.split.n_users)))
    report = evaluate_quality(setup, users=users, progress=_say)
    print(format_report(report))
    if args.json is not None:
        write_report(report, args.json)
        print(f"wrote {args.json}")
    return 0


def register(sub) -> None:
    """Add the golden-model commands to the ``rpaccel`` sub-command parser."""
    p = sub.add_parser("data", help="fetch and verify MovieLens-100K (from the recbole wheel)")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("train", help="train (or reuse) the small, medium and large models")
    p.add_argument("--force", action="store_true", help="retrain even if artifacts exist")
    p.add_argument("--verbose", action="store_true", help="print every training epoch")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="ranking quality of every pipeline, float32 and int8")
    p.add_argument("--json", type=Path, help="write the report as JSON here")
    p.add_argument("--users", type=positive_int, default=None, metavar="N",
                   help="evaluate only the first N test users (default: all)")
    p.set_defaults(func=cmd_eval)
