"""`mrisynth audit --real DIR --synthetic DIR --out AUDIT [--classifier RUN]`."""

from __future__ import annotations

import argparse

from mrisynth.cliutil import add_config_args, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    audit = subparsers.add_parser(
        "audit", help="audit a synthetic set: fidelity (FD/KID, precision/recall), diversity, memorisation")
    audit.add_argument("--real", required=True, help="prepared data folder; its train split is the reference")
    audit.add_argument("--synthetic", required=True, help="synthetic set folder (from `mrisynth generator sample`)")
    audit.add_argument("--out", required=True, help="folder for quality.json, CSVs and figures")
    audit.add_argument("--classifier", default=None,
                       help="a real-only classifier run folder: its penultimate layer is the 'classifier' space")
    add_config_args(audit)
    audit.set_defaults(func=_audit)


def _audit(args: argparse.Namespace) -> int:
    from mrisynth.quality.audit import AuditConfig, run_audit

    cfg = config_from_args(AuditConfig, args)
    result = run_audit(cfg, real_dir=args.real, synthetic_dir=args.synthetic, out_dir=args.out,
                       classifier_dir=args.classifier)
    for space, metrics in result["feature_spaces"].items():
        # Both against train half A at one sample size, so the two FDs can be compared directly.
        syn, real = metrics["real_vs_real"]["synthetic_vs_half"]["overall"], metrics["real_vs_real"]["overall"]
        print(f"{space}: FD synthetic {_num(syn.get('fd'))} vs real {_num(real.get('fd'))}, "
              f"KID {_num(syn.get('kid'))} vs {_num(real.get('kid'))}, precision {_num(syn.get('precision'))}, "
              f"recall {_num(syn.get('recall'))} (n={syn.get('n_synthetic')})")
    pixel = result["memorisation"]["pixel"]
    print(f"memorisation: {pixel['n_above']} synthetic image(s) with pixel correlation >= {pixel['threshold']} "
          f"to a training image; {len(result['memorisation']['patients_reproduced'])} patient(s) reproduced")
    for warning in result["warnings"]:
        print(f"warning: {warning}")
    print(f"audit written to {args.out}/quality.json")
    return 0


def _num(value: object) -> str:
    return "n/a" if value is None else f"{value:.4g}"
