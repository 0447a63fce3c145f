import gzip
import json

import polars as pl
import pytest

from nexa_core.documents import DomainFolderError, LoadLimits, load_domain

PARA = "A photon is a quantum of electromagnetic radiation that carries energy proportional to its frequency."


def write_formats(folder):
    folder.mkdir(parents=True)
    (folder / "optics.md").write_text(f"# Optics\n\n{PARA}\n\nLenses refract light because its speed changes.\n")
    (folder / "waves.txt").write_text("A wave is a disturbance that carries energy through a medium.\n")
    (folder / "records.jsonl").write_text(json.dumps({"topic": "atoms", "title": "Atoms",
                                                      "text": "An atom is the smallest unit of an element."}) + "\n")
    with gzip.open(folder / "more.jsonl.gz", "wt") as fh:
        fh.write(json.dumps({"topic": "heat", "text": "Heat is energy transferred because of a temperature difference."}) + "\n")
    pl.DataFrame({"topic": ["fields"], "text": ["A field is a quantity that has a value at every point in space."]}) \
        .write_parquet(folder / "fields.parquet")


def test_every_format_loads_with_topic_and_source(tmp_path):
    write_formats(tmp_path / "physics")
    docs, bad = load_domain(tmp_path, "physics")
    assert bad.is_empty()
    assert sorted(docs["topic"]) == ["atoms", "fields", "heat", "optics", "waves"]
    md = docs.filter(pl.col("topic") == "optics").row(0, named=True)
    assert md["title"] == "Optics" and md["text"].startswith("A photon") and md["source_path"] == "physics/optics.md"
    assert docs.filter(pl.col("topic") == "atoms")["title"].item() == "Atoms"
    assert docs["doc_id"].n_unique() == docs.height


def test_ids_are_content_hashes(tmp_path):
    write_formats(tmp_path / "physics")
    first, _ = load_domain(tmp_path, "physics")
    (tmp_path / "physics" / "waves.txt").rename(tmp_path / "physics" / "waves_renamed.txt")
    second, _ = load_domain(tmp_path, "physics")
    assert set(first["doc_id"]) == set(second["doc_id"])


def test_bad_rows_and_files_are_quarantined_with_file_row_and_reason(tmp_path):
    folder = tmp_path / "chemistry"
    write_formats(folder)
    good = json.dumps({"topic": "acids", "text": "An acid is a substance that donates protons to a base."})
    (folder / "mixed.jsonl").write_text("\n".join([
        good, "{not json", json.dumps({"body": "wrong key"}), json.dumps({"text": ""}),
        json.dumps({"text": "x" * 500}), json.dumps([1, 2]), good]) + "\n")
    (folder / "broken.txt").write_bytes(b"\xff\xfe\x00 not utf8 \xc3\x28")
    docs, bad = load_domain(tmp_path, "chemistry", LoadLimits(max_doc_chars=400))
    rows = {(r["source_path"], r["source_row"]): r["reason"] for r in bad.iter_rows(named=True)}
    assert rows == {
        ("chemistry/mixed.jsonl", 2): "undecodable",
        ("chemistry/mixed.jsonl", 3): "wrong_schema",
        ("chemistry/mixed.jsonl", 4): "empty",
        ("chemistry/mixed.jsonl", 5): "oversized",
        ("chemistry/mixed.jsonl", 6): "wrong_schema",
        ("chemistry/mixed.jsonl", 7): "duplicate_document",
        ("chemistry/broken.txt", None): "undecodable",
    }
    assert (bad["domain"] == "chemistry").all()
    assert "acids" in docs["topic"].to_list() and docs.height == 6  # 5 formats + the good jsonl row


def test_missing_or_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DomainFolderError, match="partition 'geology'.*does not exist"):
        load_domain(tmp_path, "geology")
    (tmp_path / "geology").mkdir()
    (tmp_path / "geology" / "notes.csv").write_text("a,b\n")
    with pytest.raises(DomainFolderError, match="partition 'geology'.*no supported files"):
        load_domain(tmp_path, "geology")
