"""The model every domain's student starts from (NEXA_BASE_MODEL), unless student_base's run config names
another. The default is the reading config's own (nexa_core/configs/pretrain_default.yaml)."""

import dagster as dg
from pydantic import Field

from nexa_core.recipe import ReadingConfig


class StudentModel(dg.ConfigurableResource):
    base_model: str = Field(
        default=ReadingConfig.defaults().base_model,
        description="A named base shipped in a package (smollm2-135m-instruct), nexa-tiny-llama (built from the "
        "corpus, for fast tests), a local model folder or a hub id available offline",
    )
