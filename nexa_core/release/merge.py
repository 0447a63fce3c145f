"""A release's weights, merged where the checkpoint lies and not in the orchestrator's process:
`python -m nexa_core.release.merge` (the model_release stage). Reports what merge_checkpoint made and, when
the request names a registered model, the MLflow version it logged (the weights are loaded here only)."""

from __future__ import annotations

import sys

from nexa_core.stage import MergeRequest, serve


def merge_and_register(request: MergeRequest, log) -> dict:
    from nexa_core.release.promote import merge_checkpoint
    from nexa_core.release.registry import RegistryTarget, register_release

    merged = merge_checkpoint(request.checkpoint, request.output_dir) | {"merged_uri": request.output_dir}
    log(f"merged {merged['merged_from']} into {merged['staging']}")
    if request.registered_model:
        target = RegistryTarget(request.tracking_uri, request.experiment_id, request.registered_model)
        merged |= register_release(target, merged, request.registry_tags())
        log(f"registered {merged['registered_model']} v{merged['model_version']}")
    return merged


def main(argv: list[str] | None = None) -> int:
    request = MergeRequest.parse(argv, __doc__.splitlines()[0])
    return serve(request, lambda log: merge_and_register(request, log))


if __name__ == "__main__":
    sys.exit(main())
