"""Recite, then answer: the form of the student's replies.

A small model that read a fact as a sentence recalls it as that sentence: given "Complete the statement: A polymer
is a large ...", the model after reading goes on "... molecule made of many repeating units", while a student
taught to reply with the bare word guesses one ("chain"). So each SFT reply first recites the passage's sentence
that holds the fact, then gives the answer on a line of its own after ANSWER_MARK (recitation-augmented answering,
Sun et al., ICLR 2023). The student then answers from what it recites, on documents it read but was never quizzed
on. What is scored is the final answer: `final_answer` takes it back out of a reply, and a reply without the mark
(the read and base models, a plain SFT set) is its own answer.

Pure functions over strings: the SFT set writes replies with them, the answers and the suites read them back.
"""

from __future__ import annotations

import re

ANSWER_MARK = "Answer:"
_MARKED = re.compile(r"(?:^|\n)\s*" + re.escape(ANSWER_MARK) + r"\s*")


def _content_words(text: str) -> set[str]:
    from nexa_core.teacher.question_forms import FUNCTION_WORDS

    return {w for w in re.findall(r"\w+", text.lower()) if w not in FUNCTION_WORDS}


def source_sentence(question: str, answer: str, passage: str | None) -> str | None:
    """The passage's sentence that states the pair's fact: the most content words shared with the answer (each
    counting twice) and the question; the first such sentence on a tie. None when no sentence shares a word with
    the answer (the reply is then the bare answer: a recitation of some other fact would teach a wrong one)."""
    # the teacher package imports its clients: only the SFT set's builder needs its rule set, not the answers
    from nexa_core.teacher.question_forms import sentences

    wanted, asked = _content_words(answer), _content_words(question)
    best, best_score = None, 0
    for sentence in sentences(passage or ""):
        words = _content_words(sentence)
        if not words & wanted:
            continue
        score = 2 * len(words & wanted) + len(words & asked)
        if score > best_score:
            best, best_score = sentence, score
    return best


def recited(recitation: str | None, answer: str) -> str:
    """The reply the student learns: the recitation, then the answer after ANSWER_MARK on its own line."""
    return f"{recitation}\n{ANSWER_MARK} {answer}" if recitation else answer


def split_reply(reply: str) -> tuple[str | None, str]:
    """(recitation, final answer) of a reply: the text after its last ANSWER_MARK at a line's start, and what came
    before it; (None, the reply) when it has no mark."""
    marks = list(_MARKED.finditer(reply))
    if not marks:
        return None, reply.strip()
    last = marks[-1]
    return reply[: last.start()].strip() or None, reply[last.end() :].strip()


def final_answer(reply: str) -> str:
    return split_reply(reply)[1]
