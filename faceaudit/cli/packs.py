"""`faceaudit models`: the model packs, where each file comes from, whether it verifies."""

from __future__ import annotations

import typer

from faceaudit.cli.common import ModelsOption
from faceaudit.errors import FaceAuditError


def list_models(models: ModelsOption = None) -> None:
    """List model packs: where each file comes from, whether its SHA-256 verifies, licence."""
    from faceaudit.models.calibration_files import load_calibration
    from faceaudit.models.packs import ModelPack, buffalo_s, resolve_pack, sha256_of

    packs: list[ModelPack | FaceAuditError] = []
    for make in (buffalo_s, lambda: resolve_pack(models)) if models else (buffalo_s,):
        try:
            packs.append(make())
        except FaceAuditError as error:
            packs.append(error)
    ok = True
    for pack in packs:
        if isinstance(pack, FaceAuditError):
            typer.echo(f"error: {pack.message}")
            ok = False
            continue
        default = " (default)" if pack.name == "buffalo_s" and not models else ""
        typer.echo(f"{pack.name}{default}")
        for model_file in pack.files:
            if not model_file.path.is_file():
                state, ok = "MISSING", False
            else:
                actual = sha256_of(model_file.path)
                if model_file.sha256 is None:
                    state = f"sha256 {actual} (no published digest to check against)"
                elif actual == model_file.sha256:
                    state = f"sha256 verified {actual}"
                else:
                    state, ok = f"SHA-256 MISMATCH: {actual} != {model_file.sha256}", False
            typer.echo(f"  {model_file.role:<10} {model_file.path}\n"
                       f"             from {model_file.source}\n             {state}")
        calibration = load_calibration(pack, pack.recognizer.sha256)
        typer.echo("  threshold  " + (
            f"{calibration.threshold} (calibrated: {calibration.source})"
            if calibration.calibrated else f"{calibration.threshold} (uncalibrated: run "
            "`faceaudit eval ... --calibrate PACK/faceaudit-calibration.json`)"))
        typer.echo(f"  licence    {pack.licence}")
    if not ok:
        raise typer.Exit(code=2)
