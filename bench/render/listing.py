"""``bench list`` output: the registered backbones, the stages and the augmentation policies."""

from __future__ import annotations

from bench.render.format import table
from bench.stages import unfreeze_layers


def _pretrained_columns(spec) -> dict:
    """ImageNet top-1 and the weights' origin, from the spec's pretrained metadata."""
    if spec.pretrained is None:
        return {"imagenet top-1": "", "weights from": ""}
    return {"imagenet top-1": f"{spec.pretrained.top1:.1f} %", "weights from": spec.pretrained.weights.origin}


def _solver(stage) -> str:
    return _optimiser(stage) + ("" if stage.precision == "float32" else f", {stage.precision} precision")


def _optimiser(stage) -> str:
    if stage.solver == "lbfgs":
        low, high, count = stage.l2_penalties
        return f"L-BFGS, L2 penalty from {count} log-spaced values in [{low:.0e}, {high:.0e}]".replace("e-0", "e-").replace("e+0", "e")
    if stage.solver == "nesterov":
        return f"Nesterov SGD, {stage.epochs} epochs, batch {stage.batch_size}, lr {stage.learning_rate:g} per 1,024 examples"
    return f"AdamW, {stage.epochs} epochs, lr {stage.learning_rate:g}"


def render_listing(specs, stages: dict, policies: dict) -> str:
    """Three tables: backbones (with what finetune unfreezes), stages (by the name each is listed
    under: a backbone's own recipe for a stage is a row of its own), policies."""
    backbones = [
        {
            "backbone": s.name,
            "stages": ", ".join(s.stages),
            "default px": s.default_image_size,
            "finetune unfreezes": unfreeze_layers(stages["finetune"], s.unfreeze_layers) if "finetune" in s.stages else "",
            "imagenet weights": "yes" if s.has_imagenet_weights else "no",
            **_pretrained_columns(s),
            "description": s.description,
        }
        for s in specs
    ]
    stage_rows = [{"stage": name, "trains with": _solver(s), "augment": s.augment, "description": s.description} for name, s in stages.items()]
    policy_rows = [{"policy": p.name, "exact cache": "yes" if p.cache_variants else "no", "description": p.description} for p in policies.values()]
    return "\n\n".join([table(backbones), table(stage_rows), table(policy_rows)])
