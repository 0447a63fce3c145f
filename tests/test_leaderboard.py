import base64
import re
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from nexa_core import schemas
from nexa_core.evaluate.leaderboard import leaderboard_markdown, rank_checkpoints, ranked_schema, write_report

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
TOPICS = {"__all__": 0.0, "kinetics": 0.05, "spectra": 0.0, "safety": -0.2}  # safety is the weak topic
BASE = {"exact_match": 0.05, "token_f1": 0.30, "rouge_l": 0.25, "judge_score": 0.40}


def _evaluation(domain, round_, checkpoint, student, hours, judge_n=60):
    """Rows of one eval_metrics run: student and base, every topic and metric. A metric left out of
    `student` is absent; judge_n=0 stands for a configured judge that scored nothing."""
    rows = []
    for role, scores in (("student", student), ("base", {m: BASE[m] for m in student})):
        for topic, shift in TOPICS.items():
            for metric, mean in scores.items():
                n = judge_n if metric == "judge_score" else 60
                value = None if n == 0 else round(mean + shift, 3)
                rows.append(
                    {
                        "domain": domain,
                        "round": round_,
                        "checkpoint_id": checkpoint,
                        "sft_version": round_,
                        "model_role": role,
                        "topic": topic,
                        "metric": metric,
                        "mean": value,
                        "ci_low": None if value is None else value - 0.05,
                        "ci_high": None if value is None else value + 0.05,
                        "n": n if topic == "__all__" else n // 3,
                        "created_at": T0 + timedelta(hours=hours),
                    }
                )
    return rows


def _history():
    words = {"exact_match": 0.2, "rouge_l": 0.4}
    rows = (
        # chem round 1: judge configured but nothing scored -> falls back to token_f1 0.50
        _evaluation(
            "chem", 1, "chem-r1-0123456789abcdef", {**words, "token_f1": 0.50, "judge_score": 0.99}, hours=1, judge_n=0
        )
        + _evaluation("chem", 2, "chem-r2-0123456789abcdef", {**words, "token_f1": 0.60, "judge_score": 0.80}, hours=3)
        # bio&med exercises HTML escaping
        + _evaluation(
            "bio&med", 1, "bio-r1-0123456789abcdef", {**words, "token_f1": 0.55, "judge_score": 0.70}, hours=2
        )
        # bio round 2: no judge; an older evaluation (0.90) superseded by a re-evaluation (0.65)
        + _evaluation("bio&med", 2, "bio-r2-0123456789abcdef", {**words, "token_f1": 0.90}, hours=4)
        + _evaluation("bio&med", 2, "bio-r2-0123456789abcdef", {**words, "token_f1": 0.65}, hours=5)
    )
    return pl.DataFrame(rows, schema=schemas.EVAL_HISTORY)


# expected order across domains: chem-r2 0.80 judge, bio-r1 0.70 judge, bio-r2 0.65 f1, chem-r1 0.50 f1
ORDER = ["chem-r2-0123456789abcdef", "bio-r1-0123456789abcdef", "bio-r2-0123456789abcdef", "chem-r1-0123456789abcdef"]


@pytest.fixture(scope="module")
def ranked():
    return rank_checkpoints(_history())


def test_ranks_all_domains_by_score(ranked):
    assert ranked.columns == list(ranked_schema())
    assert ranked["checkpoint_id"].to_list() == ORDER
    assert ranked["rank"].to_list() == [1, 2, 3, 4]
    assert ranked["domain_rank"].to_list() == [1, 1, 2, 2]
    assert ranked["score"].to_list() == pytest.approx([0.80, 0.70, 0.65, 0.50])


def test_primary_metric_falls_back_to_token_f1(ranked):
    by_id = {row["checkpoint_id"]: row for row in ranked.iter_rows(named=True)}
    assert [by_id[c]["primary_metric"] for c in ORDER] == ["judge_score", "judge_score", "token_f1", "token_f1"]
    assert by_id["chem-r1-0123456789abcdef"]["judge_score"] is None  # n=0: not a score of 0.99
    assert by_id["bio-r2-0123456789abcdef"]["judge_score"] is None
    assert by_id["chem-r2-0123456789abcdef"]["token_f1"] == pytest.approx(0.60)


def test_latest_evaluation_wins(ranked):
    row = ranked.filter(pl.col("checkpoint_id") == "bio-r2-0123456789abcdef").row(0, named=True)
    assert row["score"] == pytest.approx(0.65)
    assert row["evaluated_at"] == T0 + timedelta(hours=5)
    assert ranked.height == 4  # the duplicate evaluation is not a second row


def test_lift_is_score_minus_base(ranked):
    assert ranked["base_score"].to_list() == pytest.approx([0.40, 0.40, 0.30, 0.30])
    assert ranked["lift"].to_list() == pytest.approx((ranked["score"] - ranked["base_score"]).to_list())
    assert ranked["lift"].to_list() == pytest.approx([0.40, 0.30, 0.35, 0.20])


def test_ties_rank_newer_first():
    rows = _evaluation("chem", 1, "old", {"token_f1": 0.5}, hours=1) + _evaluation(
        "chem", 2, "new", {"token_f1": 0.5}, hours=2
    )
    ranked = rank_checkpoints(pl.DataFrame(rows, schema=schemas.EVAL_HISTORY))
    assert ranked["checkpoint_id"].to_list() == ["new", "old"]


def test_markdown_lists_checkpoints_in_rank_order(ranked):
    text = leaderboard_markdown(ranked)
    lines = text.splitlines()
    assert lines[0].startswith("| rank | domain | round | checkpoint | metric | score | base | lift | n |")
    assert [line.split("|")[4].strip() for line in lines[2:]] == [c[:12] for c in ORDER]
    assert "0.800 ± 0.050" in text and "+0.400" in text
    assert "1 more checkpoints not shown" in leaderboard_markdown(ranked, max_rows=3)


def test_html_report_is_self_contained(ranked, tmp_path):
    path = write_report(_history(), ranked, tmp_path / "report" / "leaderboard.html")
    assert path.exists() and not path.with_suffix(".partial").exists()
    page = path.read_text()
    assert "http://" not in page and "https://" not in page
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 2 * 3  # per domain: metrics, rounds, topics
    assert all(base64.b64decode(png).startswith(b"\x89PNG") for png in images)
    assert "<td>bio&amp;med</td>" in page and "bio&med" not in page
    assert page.index("chem-r2-0123456789abcdef") < page.index("chem-r1-0123456789abcdef")


def test_empty_history():
    ranked = rank_checkpoints(schemas.empty(schemas.EVAL_HISTORY))
    assert ranked.is_empty() and ranked.schema == pl.Schema(ranked_schema())
    assert leaderboard_markdown(ranked) == "no evaluated checkpoints yet"


def test_empty_report(tmp_path):
    path = write_report(
        schemas.empty(schemas.EVAL_HISTORY),
        rank_checkpoints(schemas.empty(schemas.EVAL_HISTORY)),
        tmp_path / "leaderboard.html",
    )
    page = path.read_text()
    assert "no evaluated checkpoints yet" in page and "<img" not in page
