"""A release's weights, merged where the checkpoint lies and not in the orchestrator's process:
`python -m nexa_core.release.merge` (the model_release stage). Reports what merge_checkpoint made."""

from __future__ import annotations

import sys

from nexa_core.stage import MergeRequest, serve


def main(argv: list[str] | None = None) -> int:
    from nexa_core.release.promote import merge_checkpoint

    request = MergeRequest.parse(argv, __doc__.splitlines()[0])
    return serve(request, lambda log: merge_checkpoint(request.checkpoint, request.output_dir))


if __name__ == "__main__":
    sys.exit(main())
