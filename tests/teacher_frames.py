"""Teacher inputs and outputs as the filters read them: one passage, one response per request."""

import polars as pl

from nexa_core import schemas


def teacher_frames(responses: list[str], passage: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    inputs = pl.DataFrame(
        [
            {
                "domain": "physics",
                "request_id": f"r{i}",
                "doc_id": "d1",
                "passage_id": f"p{i}",
                "topic": "heat",
                "source_path": "physics/heat.md",
                "passage": passage,
                "template_name": "t",
                "template_hash": "h",
                "messages": "[]",
            }
            for i in range(len(responses))
        ],
        schema=schemas.TEACHER_INPUTS,
    )
    outputs = pl.DataFrame(
        [
            {
                "domain": "physics",
                "request_id": f"r{i}",
                "request_hash": f"h{i}",
                "model": "m",
                "backend": "b",
                "response": r,
                "finish_reason": "stop",
                "prompt_tokens": 1,
                "completion_tokens": 1,
                "latency_s": 0.0,
                "cost_usd": 0.0,
                "from_cache": False,
            }
            for i, r in enumerate(responses)
        ],
        schema=schemas.TEACHER_OUTPUTS,
    )
    return outputs, inputs
