"""The student reads its domain: `python -m nexa_core.train.pretrain ...` (the student_base stage).

A domain expert knows its corpus, so before any question/answer training the student is trained as
a causal LM on all of the domain's raw documents (only QA pairs are split; reading every document is
what lets the test split ask about facts the student read but was never quizzed on).

- A real base (the default SmolLM2-135M-Instruct, a named base of nexa_core/models/bases.py, a local folder or a
  hub id) reads the corpus (domain-adaptive continued pretraining) unless `continued_pretraining: false`.
- The config-built `nexa-tiny-llama` starts from random weights: this is its pretraining. Its tokenizer
  is trained on the same documents first.

Runs where train.py runs, through the same launcher and Pipes plumbing, and resumes from the last
trainer checkpoint in its output folder. The model is committed like an SFT checkpoint: a staging
folder renamed into place with its manifest of sha256s.
"""

from __future__ import annotations

import sys
from pathlib import Path

from nexa_core.distill.restatements import read_restatements
from nexa_core.models.bases import DEFAULT_STUDENT
from nexa_core.models.load import load_student
from nexa_core.recipe import ReadingConfig
from nexa_core.stage import ReadRequest
from nexa_core.train.commit import commit_model, committed
from nexa_core.train.fit import fit
from nexa_core.train.rows import document_rows, read_documents, reading_texts
from nexa_core.train.start import TrainingError, attention, bases_dir, stage_main, start_model
from nexa_core.train.student import build_default_student


def read_corpus(
    settings: ReadingConfig,
    documents: list[str],
    out_dir: Path,
    domain: str,
    bases_dir: Path | str,
    log=print,
    on_metrics=None,
    restatements: list[str] | None = None,
) -> dict:
    """Train the student on the documents (and `restatement_passes` passes over the teacher's restatements of
    them) and save it under out_dir/model; return its record."""
    if not documents:
        raise ValueError(f"partition {domain}: raw_documents has no document for this domain; nothing to read")
    out_dir = Path(out_dir)
    if done := committed(out_dir, "model"):
        log(f"partition {domain}: {done['path']} has already read the corpus; nothing to do")
        return {**done, "model_path": done["path"], "trained": True}
    name = settings.base_model
    built = name == DEFAULT_STUDENT
    record = {
        "domain": domain,
        "base_model": name,
        "config_hash": settings.digest(),  # of the settings as given, as the asset hashes them
        "settings": settings.to_dict(),
        "documents": len(documents),
        "built_from_config": built,
    }
    settings = settings.for_student(built)
    if built:
        base = out_dir / "init"
        if not (base / "config.json").exists():
            build_default_student(documents, base, seed=settings.seed, **vars(settings.student))
        base = str(base)
    else:
        base = start_model(name, bases_dir, domain, log)
        if not settings.continued_pretraining:
            try:
                load_student(base)  # fail here, naming the setting, rather than in SFT
            except ValueError as exc:
                raise TrainingError(f"partition {domain}: {exc}") from exc
            log(f"partition {domain}: continued_pretraining is off; the student starts from {base} as it is")
            return {**record, "model_path": base, "trained": False, "files": {}, "curve": [], "steps": 0}
    try:
        model, tokenizer = load_student(base, attn_implementation=attention(settings))
    except ValueError as exc:
        raise TrainingError(f"partition {domain}: {exc}") from exc
    rows = document_rows(
        tokenizer, reading_texts(documents, settings.sentence_passes, settings.seed), settings.max_length
    )
    if restatements and settings.restatement_passes:
        rows += document_rows(tokenizer, restatements, settings.max_length) * settings.restatement_passes
    log(f"partition {domain}: reading {len(documents)} documents, {sum(len(r['input_ids']) for r in rows)} tokens")
    fitted = fit(model, tokenizer, rows, [], settings, out_dir / "trainer", domain, log=log, on_metrics=on_metrics)
    record = commit_model(
        fitted["trainer"],
        tokenizer,
        out_dir,
        "model",
        {**record, "base_model_path": base, **fitted["record"], "curve": fitted["curve"]},
    )
    return {**record, "model_path": str(out_dir / "model"), "trained": True}


def _read(args, settings: ReadingConfig, log, on_metrics) -> dict:
    documents = read_documents(args.documents_uri, args.documents_version, args.domain)
    restatements = (
        read_restatements(args.restatements_uri, args.restatements_version, args.domain)
        if args.restatements_uri and settings.restatement_passes
        else None
    )
    out_dir = Path(args.output_dir)
    record = read_corpus(
        settings, documents, out_dir, args.domain, bases_dir(args), log, on_metrics, restatements=restatements
    )
    return {**record, "documents_version": args.documents_version, "restatements_version": args.restatements_version}


def main(argv: list[str] | None = None) -> int:
    return stage_main(argv, __doc__.splitlines()[0], ReadRequest, _read)


if __name__ == "__main__":
    sys.exit(main())
