"""Rubric LLM-as-judge: versioned rubric files, the judge requests, and the parsing of the answers.

A rubric is nexa_core/rubrics/<name>.yaml: description, scale {min, max}, criteria (shown to the
judge) and str.format templates for the system and user messages. Like prompt templates, its sha256
is recorded with every score, so a changed rubric is a new judge request, never a reused verdict."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import polars as pl
import yaml

from nexa_core.distill.prompts import render_messages, versioned_file
from nexa_core.ids import content_id
from nexa_core.teacher import json_reply

RUBRICS_DIR = Path(__file__).parents[1] / "rubrics"


@dataclass(frozen=True)
class Rubric:
    name: str
    sha256: str
    description: str
    min: int
    max: int
    criteria: tuple[str, ...]
    system: str
    user: str

    def render(self, domain: str, question: str, reference: str, prediction: str) -> list[dict]:
        fields = {
            "domain": domain,
            "question": question,
            "reference": reference,
            "prediction": prediction,
            "criteria": "\n".join(f"- {c}" for c in self.criteria),
            "min": self.min,
            "max": self.max,
        }
        return render_messages(f"rubric {self.name}", self.system, self.user, fields)


@cache
def load_rubric(name: str, rubrics_dir: Path = RUBRICS_DIR) -> Rubric:
    path = versioned_file(rubrics_dir, name, ".yaml", "rubric")
    raw = path.read_bytes()
    meta = yaml.safe_load(raw)
    try:
        rubric = Rubric(
            name=name,
            sha256=hashlib.sha256(raw).hexdigest(),
            description=meta["description"].strip(),
            min=int(meta["scale"]["min"]),
            max=int(meta["scale"]["max"]),
            criteria=tuple(meta["criteria"]),
            system=meta["system"],
            user=meta["user"],
        )
        rubric.render("domain", "question", "reference", "prediction")  # a template typo fails here, not mid-run
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise ValueError(f"rubric {path} is malformed: {exc!r}") from exc
    if rubric.min >= rubric.max or not rubric.criteria:
        raise ValueError(f"rubric {path} needs scale min < max and at least one criterion")
    return rubric


class JudgementError(ValueError):
    """A judge answer that does not hold a score on the rubric's scale."""


def parse_judgement(text: str, rubric: Rubric) -> tuple[float, str]:
    """(score scaled to [0, 1], reason) from a judge answer {"score": int, "reason": str}, optionally
    in a ``` fence. Anything else raises JudgementError: garbage is never a score of 0."""
    value = json_reply(text, JudgementError)
    if not isinstance(value, dict):
        raise JudgementError(f"expected a JSON object with 'score', got {type(value).__name__}")
    score = value.get("score")
    # bool is an int in Python, but true/false is no point on a scale
    if isinstance(score, bool) or not isinstance(score, int):
        raise JudgementError(f"'score' must be an integer, got {score!r}")
    if not rubric.min <= score <= rubric.max:
        raise JudgementError(f"score {score} is outside the rubric's {rubric.min}..{rubric.max}")
    reason = value.get("reason")
    return (score - rubric.min) / (rubric.max - rubric.min), reason.strip() if isinstance(reason, str) else ""


def judge_requests(predictions: pl.DataFrame, rubric: Rubric) -> pl.DataFrame:
    """One judge request per prediction, shaped for teacher.collect_responses."""
    rows = [
        {
            "domain": p["domain"],
            "request_id": content_id(
                p["checkpoint_id"], p["model_role"], p["example_id"], p["prediction"], rubric.sha256
            ),
            "messages": json.dumps(
                rubric.render(p["domain"], p["question"], p["reference"], p["prediction"]), ensure_ascii=False
            ),
        }
        for p in predictions.iter_rows(named=True)
    ]
    return pl.DataFrame(rows, schema={"domain": pl.String, "request_id": pl.String, "messages": pl.String})


def apply_judgements(
    predictions: pl.DataFrame, requests: pl.DataFrame, outputs: pl.DataFrame, rubric: Rubric, model: str
) -> pl.DataFrame:
    """The judge columns of EVAL_SCORES. A response the collector quarantined (not JSON after its
    retry, cut off, filtered) is recorded as unparseable with a null score, never as a low score."""
    answers = requests.select("request_id").join(
        outputs.select("request_id", "request_hash", "response", "unusable_reason"),
        on="request_id",
        how="left",
        maintain_order="left",
    )
    columns: dict[str, list] = {k: [] for k in ("judge_score", "judge_status", "judge_raw", "judge_reason")}
    for response, unusable in answers.select("response", "unusable_reason").iter_rows():
        score, reason, status = None, None, "ok"
        if unusable:
            status = f"unparseable ({unusable})"
        else:
            score, reason = parse_judgement(response, rubric)
        for key, value in zip(columns, (score, status, response, reason)):
            columns[key].append(value)
    return predictions.with_columns(
        *(pl.Series(k, v, dtype=pl.Float64 if k == "judge_score" else pl.String) for k, v in columns.items()),
        judge_prompt=requests["messages"],
        judge_model=pl.lit(model),
        rubric=pl.lit(rubric.name),
        rubric_sha256=pl.lit(rubric.sha256),
        judge_request_hash=answers["request_hash"],
    )


def without_judge(predictions: pl.DataFrame) -> pl.DataFrame:
    return predictions.with_columns(
        judge_score=pl.lit(None, pl.Float64),
        judge_status=pl.lit("not_configured"),
        **{
            k: pl.lit(None, pl.String)
            for k in (
                "judge_prompt",
                "judge_raw",
                "judge_reason",
                "judge_model",
                "rubric",
                "rubric_sha256",
                "judge_request_hash",
            )
        },
    )


def judge_parsing(scores: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, float]:
    """(the items the judge was asked about, those whose judgement did not parse, the share that did:
    1.0 when nothing was judged)."""
    judged = scores.filter(pl.col("judge_status") != "not_configured")
    unparseable = judged.filter(pl.col("judge_status") != "ok")
    return judged, unparseable, 1 - unparseable.height / judged.height if judged.height else 1.0
