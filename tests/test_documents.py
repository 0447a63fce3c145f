import gzip
import json

import polars as pl
import pytest

from nexa_core.data.documents import DomainFolderError, LoadLimits, domain_folders, folder_fingerprint, load_domain

PARA = "A photon is a quantum of electromagnetic radiation that carries energy proportional to its frequency."


def write_formats(folder):
    folder.mkdir(parents=True)
    (folder / "optics.md").write_text(f"# Optics\n\n{PARA}\n\nLenses refract light because its speed changes.\n")
    (folder / "waves.txt").write_text("A wave is a disturbance that carries energy through a medium.\n")
    (folder / "records.jsonl").write_text(
        json.dumps({"topic": "atoms", "title": "Atoms", "text": "An atom is the smallest unit of an element."}) + "\n"
    )
    with gzip.open(folder / "more.jsonl.gz", "wt") as fh:
        fh.write(
            json.dumps({"topic": "heat", "text": "Heat is energy transferred because of a temperature difference."})
            + "\n"
        )
    pl.DataFrame(
        {"topic": ["fields"], "text": ["A field is a quantity that has a value at every point in space."]}
    ).write_parquet(folder / "fields.parquet")


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
    (folder / "mixed.jsonl").write_text(
        "\n".join(
            [
                good,
                "{not json",
                json.dumps({"body": "wrong key"}),
                json.dumps({"text": ""}),
                json.dumps({"text": "x" * 500}),
                json.dumps([1, 2]),
                good,
            ]
        )
        + "\n"
    )
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


def test_links_out_of_the_raw_root_are_quarantined_never_read(tmp_path):
    root = tmp_path / "raw"
    write_formats(root / "physics")
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("root:x:0:0:the system password file, which must never become a document\n")
    (root / "physics" / "passwd.txt").symlink_to(secret)
    (root / "physics" / "elsewhere").symlink_to(secret.parent, target_is_directory=True)  # a linked folder
    (root / "physics" / "gone.md").symlink_to(tmp_path / "missing.md")
    (root / "physics" / "same.txt").symlink_to(root / "physics" / "waves.txt")  # inside the root: read
    docs, bad = load_domain(root, "physics")
    reasons = {(r["source_path"], r["reason"]) for r in bad.iter_rows(named=True)}
    assert ("physics/passwd.txt", "outside_raw_root") in reasons
    assert ("physics/elsewhere", "outside_raw_root") in reasons
    assert ("physics/gone.md", "broken_link") in reasons
    assert not docs["text"].str.contains("password").any()
    assert ("physics/waves.txt", "duplicate_document") in reasons  # same.txt (read first) repeats it: read
    assert str(secret) in bad.filter(pl.col("source_path") == "physics/passwd.txt")["detail"].item()


def test_a_file_of_random_bytes_is_one_quarantine_row_with_counts(tmp_path):
    import random

    root = tmp_path / "raw"
    write_formats(root / "biology")
    noise = random.Random(3).randbytes(200_000)
    (root / "biology" / "noise.jsonl").write_bytes(noise)
    good = json.dumps({"text": "A cell is the smallest unit of life that can replicate on its own."})
    (root / "biology" / "few_bad.jsonl").write_text("\n".join([good, "{oops", "also not json"]) + "\n")
    docs, bad = load_domain(root, "biology")
    noise_rows = bad.filter(pl.col("source_path") == "biology/noise.jsonl")
    assert noise_rows.height == 1 and noise_rows["source_row"].item() is None
    assert noise_rows["reason"].item() == "undecodable" and "lines are not JSON" in noise_rows["detail"].item()
    lines = [line for line in noise.split(b"\n") if line.strip()]
    assert f"of {len(lines)} lines" in noise_rows["detail"].item()
    few = bad.filter(pl.col("source_path") == "biology/few_bad.jsonl")
    assert sorted(few["source_row"].to_list()) == [2, 3]  # a few bad lines stay rows of their own
    assert "A cell is" in " ".join(docs["text"].to_list())


def test_folder_fingerprint_counts_the_files_the_loader_reads(tmp_path):
    folder = tmp_path / "physics"
    write_formats(folder)
    before = folder_fingerprint(folder)
    (folder / "notes.csv").write_text("not read\n")  # unsupported: neither read nor fingerprinted
    (folder / ".draft.md").write_text("# Hidden\n\nNot read either.")
    assert folder_fingerprint(folder) == before
    (folder / "gone.md").symlink_to(tmp_path / "missing.md")  # read, and quarantined as a broken link
    with_link = folder_fingerprint(folder)
    assert with_link != before
    (folder / "waves.txt").write_text("A wave is a disturbance that carries energy through a medium or a field.\n")
    assert folder_fingerprint(folder) != with_link
    assert [f.name for f in domain_folders(tmp_path)] == ["physics"] and domain_folders(tmp_path / "none") == []
