"""Synthetic-image audit: fidelity (FD, KID, precision/recall/density/coverage against a real-vs-real
baseline), diversity (MS-SSIM within class) and memorisation (nearest training image by pixels and features).

    from mrisynth.quality import AuditConfig, run_audit
    result = run_audit(AuditConfig(), real_dir="runs/x/data", synthetic_dir="runs/x/synthetic",
                       out_dir="runs/x/quality", classifier_dir="runs/x/trials/real-only-s0")

The structure of the returned dict (= quality.json) is documented in `mrisynth.quality.audit`.
"""

from mrisynth.quality.audit import AuditConfig, run_audit

__all__ = ["AuditConfig", "run_audit"]
