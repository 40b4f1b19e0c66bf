"""``bench prefetch --to DIR``: CIFAR-10 and ImageNet weight files into a Keras cache folder, for offline machines."""

from __future__ import annotations

import shlex
import sys

from backbones import get_backbone, list_backbones
from bench.preflight import check_min_image_sizes, check_out_dir


def handle(args, command: str) -> int:
    from bench.prefetch import prefetch

    names = args.backbone or [n for n in list_backbones() if get_backbone(n).has_imagenet_weights]
    specs = [get_backbone(name) for name in names]
    for spec in specs:
        if not spec.has_imagenet_weights:
            print(f"note: {spec.name} has no ImageNet weights; it needs CIFAR-10 only", file=sys.stderr)
    wanted = []
    for spec in specs:
        if spec.has_imagenet_weights:
            sizes = args.image_size or [spec.default_image_size]
            check_min_image_sizes(spec, sizes)
            wanted += [(spec.name, size) for size in sizes]
    check_out_dir(args.to, "--to")
    print(f"fetching CIFAR-10 and the ImageNet weights of {len(wanted)} backbone x size pair(s) through Keras into {args.to}/ (log: {args.to}/prefetch.log) ...", file=sys.stderr, flush=True)
    fetched = prefetch(args.to, wanted)
    for path in fetched:
        print(f"  {path.relative_to(args.to.resolve())}", file=sys.stderr)
    print(f"export KERAS_HOME={shlex.quote(str(args.to.resolve()))}")
    return 0
