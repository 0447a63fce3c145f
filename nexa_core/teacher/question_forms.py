"""The offline teacher's rule set: deterministic question/answer pairs from a passage, each fact
asked several ways, so the student learns to recall a fact whichever way it is asked.

The student is tested closed-book on documents it read but was never quizzed on, so what it must
learn is the skill of question -> recall, not a single phrasing. Each pair's `kind` names its form:

  definition            "X is a Y."         What is X?                             -> A Y.
  reverse_definition    "X is a Y."         What is the term for a Y?              -> X
  quantity              "... 9.81 m ..."    Fill in the quantity: ... ____ ...     -> 9.81 m
  quantity_question     "The Z of W is Q."  What is the Z of W?                    -> Q
  cause_effect          "E because C."      ... why is it that E?                  -> Because C.
  reverse_cause_effect  "E because C."      ... what happens because C?            -> E.
  cloze                 any sentence        Fill in the blank: ... ____ ...        -> a key term
  completion            any sentence        Complete the statement: ... ...        -> the key term next

(the cause and effect forms also read "C leads to E", "C, which is why E" and "E results from C").
Every answer is a span of the passage or a light rewording of one (case, a leading "Because"), cut
at the first clause boundary so it stays short: the grounding filter checks the words, and the
metric is token F1 against the reference. A sentence whose subject is a pronoun ("It ...", "When it
is visible, it ...") yields nothing: the student answers without the passage, so the question must
stand on its own; nor does a question in the passage, which states no fact. A defined term is a noun
phrase ("When it", "However" or "Between these two extremes" are not), a completion stops where its
phrase ends (not on "cell-surface" before "receptors") and never on a verb, and no answer is a
function word (FUNCTION_WORDS, which the pair filters share).

Pure functions over strings (stdlib only), so any teacher, test or bench can use them.
"""

from __future__ import annotations

import re
from typing import NamedTuple

FORMS = (
    "definition",
    "reverse_definition",
    "quantity",
    "quantity_question",
    "cause_effect",
    "reverse_cause_effect",
    "cloze",
    "completion",
)
CLOZES_PER_SENTENCE = 2  # more key terms are held back for feedback rounds (see `heuristic_pairs`)

_SENTENCES = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")
_STOP = frozenset(
    "the a an of and or in on to is are was were be by for with as at from that this "
    "which it its into than then there their these those such can may also".split()
)
# Closed-class words (articles, determiners, pronouns, prepositions, conjunctions, auxiliaries), the
# adverbs, and the light verbs that carry no fact alone: a term, a blank or an answer made only of
# these asks or says nothing. The pair filters (nexa_core/distill/filters.py) read the same lists.
_CLOSED_CLASS = frozenset(
    """the a an this that these those each every either neither some any no all both few many much more most
less least several such what which whose whatever whichever another other others own same i me my mine we us our
ours you your yours he him his she her hers it its itself they them their theirs themselves himself herself one ones
of in on at by for with from to into onto upon about above across after against along among around as before behind
below beneath beside besides between beyond during except inside like near off out outside over past per since
through throughout toward towards under underneath until unlike up via within without and or but nor so yet because
although though while whereas if unless whether than then when where why how who whom once is are was were be been
being am do does did doing done has have had having can could may might must shall should will would not also only
just even still already very too quite rather almost however therefore thus hence moreover furthermore instead
indeed otherwise here there now today often sometimes usually always never ever again else perhaps enough s t""".split()
)
LIGHT_VERBS = frozenset(
    """include includes included including contain contains contained containing involve involves involved involving
become becomes became make makes made get gets got take takes took go goes went call calls called known use uses
used""".split()
)
FUNCTION_WORDS = _CLOSED_CLASS | LIGHT_VERBS
_PRONOUN_START = re.compile(r"^(?:It|Its|This|These|That|Those|They|Their|Them|He|She|His|Her|Each|Both|Such)\b")
_PRONOUN = re.compile(r"^(?:it|its|this|these|that|those|they|their|them|he|she|his|her)\b", re.I)
_LEANS = re.compile(r"it|they|he|she")
_SUBORDINATE = frozenset("because when if since while as so that which until unless".split())
# Words that point at the page, not the subject: a question answered by one teaches nothing.
_LAYOUT = frozenset(
    "figure figures fig table tables below above following section sections chapter chapters "
    "equation equations eq eqn page pages appendix".split()
)

# --- clause boundaries: answers stop at the first one ------------------------------------------

# A comma before one of these words starts a new clause; a comma before anything else may be a list
# ("genes, species and ecosystems") and is kept.
_CLAUSE = re.compile(
    r"\s*(?:[;:]|,\s+(?=(?:and|but|so|which|while|whereas|meaning|written|equal|equals|about|"
    r"often|usually|although|though|where|whose|because|as|then|whatever|with|making|so that)\b)"
    r"|\s+because\b(?!\s+of\b)|\s+and\s+(?:is|are|was|were|equals|has|have|can)\b|\s+-\s+)"
)


_LIST_END = re.compile(r",\s+(?:and|or)\s")


def _clause(text: str) -> str:
    """`text` up to its first clause boundary. The ", and" that closes a list ("gives hair, nails, and
    skin their hardness") is not one: cut there, the answer would end inside the list."""
    for m in _CLAUSE.finditer(text):
        if not (_LIST_END.match(text, m.start()) and "," in text[: m.start()]):
            return text[: m.start()].strip(" ,.;:")
    return text.strip(" ,.;:")


def _strip_end(sentence: str) -> str:
    return sentence.rstrip(" .!?;:")


def _lower_first(text: str) -> str:
    """Sentence case off; a first word with capitals inside (DNA, PV, Bronsted-Lowry) or a possessive
    (Avogadro's) kept as written."""
    first = text.split(" ", 1)[0]
    return text if any(c.isupper() for c in first[1:]) or "'s" in first else text[:1].lower() + text[1:]


def _upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def stands_alone(sentence: str) -> bool:
    """False for a sentence whose subject is a pronoun ("It ...", "At rest it beats ...", "When it is
    visible, it is ..."): the student answers without the passage, so the question must not lean on
    the sentence before."""
    if _PRONOUN_START.match(sentence):
        return False
    first, _, rest = sentence.partition(",")
    if first.split(" ", 1)[0].lower() in _SUBORDINATE and _PRONOUN.match(rest.strip()):
        return False  # the main clause after "When ...," opens with a pronoun
    opening = sentence.split()[:4]
    for word in opening:
        if word.lower().strip(",") in _SUBORDINATE:  # "Ice floats because it is ...": its own subject
            return True
        if _LEANS.fullmatch(word.strip(",")):
            return False
    return True


def _pair(kind: str, question: str, answer: str) -> dict:
    return {"kind": kind, "question": question, "answer": answer}


def split_sentences(text: str) -> list[str]:
    """The text's sentences, whitespace collapsed: a break after . ! or ? before a capital or a digit."""
    return [s.strip() for s in _SENTENCES.split(" ".join(text.split()))]


def sentences(passage: str) -> list[str]:
    """The passage's sentences, whitespace collapsed; fragments of 20 characters or less dropped."""
    return [s for s in split_sentences(passage) if len(s) > 20]


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def has_content_word(text: str) -> bool:
    """True when a word of `text` is not a function word (FUNCTION_WORDS)."""
    return any(w not in FUNCTION_WORDS for w in _words(text))


_URL = re.compile(r"https?:|www\.", re.I)
# A pointer at the page in brackets ("(Figure 8.11)", "(see Chapter 19)"): not part of any fact.
_LAYOUT_REFERENCE = re.compile(
    r"\s*\(\s*(?:see |credit[: ]|from )?(?:figure|fig\.|table|chapter|section|equation)\b[^()]*\)", re.I
)


def is_layout_answer(answer: str) -> bool:
    """True for an answer that is only a layout word, maybe numbered: "Figure", "Table 2", "below"."""
    words = [w for w in re.findall(r"[a-z]+|\d+", answer.lower()) if w not in ("the", "a", "an")]
    return any(w in _LAYOUT for w in words) and all(w in _LAYOUT or w.isdigit() for w in words)


# --- definitions --------------------------------------------------------------------------------

_DEFINITION = re.compile(
    r"^(?P<article>An?\s+|The\s+)?(?P<term>[A-Za-z][\w'()\-, ]{1,60}?)\s+(?P<verb>is|are)\s+(?:defined as\s+)?"
    r"(?P<defn>.{10,})$"
)
_CALLED = re.compile(
    r"^(?:An?|The)\s+(?P<defn>.{10,}?)\s+(?P<verb>is|are)\s+(?:called|known as|termed)\s+"
    r"(?P<term>[\w'\- ]{2,40})$"
)
# A definition's first word: an article, or (bare) a noun or adjective; not a participle ("is
# stopped"), adverb ("is usually"), comparative or superlative, hedge ("is about 37 degrees") or
# function word. The rest of the rule set reads those sentences.
_NOT_BARE_DEFN = re.compile(
    r"^(?:\w+(?:ed|ly|er|est)|held|lost|found|made|known|used|given|taken|kept|built|shown|"
    r"not|no|far|very|much|only|also|still|"
    r"more|less|most|least|about|around|nearly|roughly|approximately|at|in|on|by|to|as|"
    r"for|from|with|often|always|never|so|too|quite|rather|just|like|unlike|due|because|therefore|thus|hence|"
    r"both|either|neither)\b"
    # a bare adjective with its complement ("essential to ...", "plentiful in ..."): a property, not a kind;
    # a plural noun takes them too ("openings in the pharynx")
    r"|^(?!\w+s\b)\w+,?\s+(?:in|to|for|against|with|at|on|from|by|than|as)\b"
)
# Words that make a term a clause or a pointer, not a noun phrase: "the brain, which ...", "when it",
# "mechanism called X", "describe peristalsis".
_NOT_IN_TERM = _SUBORDINATE | frozenset(
    "where who whose whom once not called known termed describe explain it they he she them this these those".split()
)
# "The law is ..." after a sentence about a law: the term points back, so the question is ambiguous.
_ANAPHORIC = frozenset(
    "law process principle result effect method reaction limit technique theory rule idea model "
    "experiment value".split()
)
_QUANTIFIER = frozenset("most many some all every few several no only other".split())


class Definition(NamedTuple):
    term: str  # as written: "entropy", "Lewis acid"
    subject: str  # the term as a question names it: "entropy", "a Lewis acid", "the kelvin"
    defn: str  # what the sentence says it is, up to its first clause boundary
    verb: str  # is or are


def definition(sentence: str) -> Definition | None:
    """The term a sentence defines and its definition, or None when the sentence defines none that a
    question can name on its own (see the checks below)."""
    s = _strip_end(sentence)
    if m := _CALLED.match(s):  # "The <description> is called <term>"
        term, defn, verb, article = m.group("term"), f"the {m.group('defn')}", m.group("verb"), "the"
    elif m := _DEFINITION.match(s):
        term, defn, verb = m.group("term").strip(" ,"), m.group("defn"), m.group("verb")
        article = (m.group("article") or "").strip().lower()
        if not re.match(r"(?:an?|the)\s", defn) and (_NOT_BARE_DEFN.match(defn) or defn.split()[0] in _STOP):
            return None
        if _NOT_IN_TERM & set(_words(term)):
            return None
        if "," in term and " and " not in term:  # "ATP, adenosine triphosphate": the term, not its gloss
            term = term.split(",")[0]
            if term.lower() in FUNCTION_WORDS or term.endswith("ly"):  # "However, ...", "Finally, ..."
                return None
        if article == "the" and term.lower() in _ANAPHORIC:
            return None
    else:
        return None
    defn = _clause(defn)
    first = term.lower().split()[0]
    if (
        first in FUNCTION_WORDS  # "Between these two extremes are ...", "Why are ...", "Today, ..."
        or first in _QUANTIFIER
        or not has_content_word(term)
        or term.lower() in ("example", "examples")  # "An example is when ...": of what?
        or _LAYOUT & set(_words(term))
        or _PRONOUN.match(term)
        or len(term.split()) > 6
        or len(defn.split()) < 2
        or re.search(r"\d", defn.split()[0])
    ):
        return None
    # After an article a capital is the term's own (a Lewis acid); at the sentence start it may not be.
    return Definition(term, f"{article} {term}" if article else _lower_first(term), defn, verb)


def definition_forms(sentence: str) -> list[dict]:
    """[definition, reverse_definition] of a sentence that defines a term, else []."""
    if (found := definition(sentence)) is None:
        return []
    term, subject, defn, verb = found
    pairs = [_pair("definition", f"What {verb} {subject}?", f"{_upper_first(defn)}.")]
    # "the SI unit of temperature" names one thing, so it can be asked directly; "a device that ..."
    # needs a frame, and enough words to single the term out ("a Lewis acid" fits many).
    if defn.lower().startswith("the "):
        pairs.append(_pair("reverse_definition", f"What {verb} {_lower_first(defn)}?", term))
    elif len(defn.split()) >= 4:
        pairs.append(_pair("reverse_definition", f"What is the term for {_lower_first(defn)}?", term))
    return pairs


# --- quantities ---------------------------------------------------------------------------------

_SI = (
    r"(?:(?:kilo|mega|giga|milli|micro|nano|pico|femto|centi)?(?:metres?|meters?|grams?|seconds?|joules?|"
    r"newtons?|watts?|volts?|electronvolts?|moles?|litres?|liters?|pascals?|coulombs?|sieverts?|hertz|"
    r"calories?)|kelvin)"
)
_UNIT = (
    rf"(?:millimetres of mercury|{_SI}(?:\s+(?:square |cubic )?{_SI})*|degrees?(?: Celsius| Fahrenheit)?|"
    r"percent|per cent|%|molar|atmospheres?|minutes?|hours?|days?|years?|dioptres?|parts per million|base pairs)"
)
_NUMBER = r"[-+]?\d[\d,]*(?:\.\d+)?(?:\s*(?:x|×)\s*10\^-?\d+)?(?:\s*(?:million|billion|trillion|thousand))?"
_HEDGE = r"(?:(?:about|roughly|approximately|nearly|around|exactly|more than|less than|at least) )?"
_RANGE = rf"{_HEDGE}(?:minus )?{_NUMBER}(?:\s*(?:to|-|–)\s*(?:minus )?{_NUMBER})?"
_PER = (
    r"(?:\s+(?:per|squared|cubed)(?:\s+(?:kilogram|mole|kelvin|second|litre|minute|year|day|metre|"
    r"square metres?|kilograms? squared|nucleon)s?)?)*"
)
_QUANTITY = re.compile(rf"(?P<q>{_RANGE}\s*{_UNIT}{_PER})(?![\w])")
# "The Z of W is about Q", "W has a Z of about Q": the subject names what the quantity measures; a
# unitless value (a ratio, an index) is allowed here because the subject gives it its meaning.
_VALUE = rf"(?P<q>{_RANGE}(?:\s*{_UNIT}{_PER})?)(?![\w])"
_VALUE_END = r"(?:,|\s+and\b|\s+or\b|$)"
_IS_VALUE = re.compile(
    rf"^(?P<subject>(?:The|A|An)?\s*[A-Za-z][\w'\- ]{{2,80}}?)\s+(?:is|are|equals|is equal to)\s+"
    rf"{_VALUE}{_VALUE_END}"
)
_HAS_VALUE = re.compile(
    rf"^(?P<subject>[A-Za-z][\w'\- ]{{2,60}}?)\s+(?:has|have)\s+(?:an?\s+)?"
    rf"(?P<property>(?!an?\s)[A-Za-z][\w\-]*(?:\s+[\w\-]+){{0,5}}?)\s+of\s+{_VALUE}{_VALUE_END}"
)


def quantity_forms(sentence: str) -> list[dict]:
    """A fill-in-the-quantity cloze per quantity with a unit, then the quantity as a direct question
    when the sentence says what it measures."""
    if not stands_alone(sentence):
        return []
    pairs = [
        _pair(
            "quantity",
            f"Fill in the quantity: {sentence[: m.start('q')]}____{sentence[m.end('q') :]}",
            m.group("q").strip(),
        )
        for m in _QUANTITY.finditer(sentence)
    ]
    s = _strip_end(sentence)
    if (m := _IS_VALUE.match(s)) and m.group("subject").split()[0].lower() not in _STOP - {"the", "a", "an"}:
        asked = _lower_first(m.group("subject").strip())
        pairs.insert(1, _pair("quantity_question", f"What is {asked}?", m.group("q").strip()))
    elif m := _HAS_VALUE.match(s):
        asked = f"the {m.group('property')} of {_lower_first(m.group('subject'))}"
        pairs.insert(1, _pair("quantity_question", f"What is {asked}?", m.group("q").strip()))
    return pairs


# --- causes and effects -------------------------------------------------------------------------

_BECAUSE = re.compile(r"^(?P<effect>.{6,}?),?\s+because\s+(?!of\b)(?P<cause>.{10,})$")
_WHICH_IS_WHY = re.compile(r"^(?P<cause>.{10,}?),?\s+which is why\s+(?P<effect>.{10,})$")
_VERB = re.compile(
    r"^(?P<cause>.{10,}?)\s+(?P<verb>causes|leads to|results in|produces|gives rise to)\s+"
    r"(?P<effect>.{6,})$"
)
_RESULTS_FROM = re.compile(
    r"^(?P<effect>.{6,}?)\s+(?P<verb>results from|is caused by|are caused by)\s+"
    r"(?P<cause>.{10,})$"
)
# A cause that is not a plain noun phrase ("A laser is a device that produces ...", "In Young's
# experiment, light ... produces") would put half a clause into the question or the answer.
_NOT_NOUN_PHRASE = re.compile(
    r"^(?:In|At|On|When|If|After|Before|During|Although|While|Since|Once)\b"
    r"|\b(?:is|are|was|were|occurs|occur)\b|\b(?:that|which|who|where)$"
)
_BASE_VERB = {
    "causes": "cause",
    "leads to": "lead to",
    "results in": "result in",
    "produces": "produce",
    "gives rise to": "give rise to",
}


def _cause_and_effect(sentence: str) -> tuple[str, str, str | None] | None:
    """(cause, effect, linking verb or None for 'because') of a sentence stating one: its pattern only."""
    s = _strip_end(sentence)
    if m := _BECAUSE.match(s):
        return _clause(m.group("cause")), m.group("effect").strip(" ,"), None
    if m := _WHICH_IS_WHY.match(s):
        return m.group("cause").strip(" ,"), _clause(m.group("effect")), None
    if (m := _RESULTS_FROM.match(s)) and not _NOT_NOUN_PHRASE.search(m.group("effect")):
        return _clause(m.group("cause")), m.group("effect").strip(" ,"), "causes"
    if (m := _VERB.match(s)) and not _NOT_NOUN_PHRASE.search(m.group("cause")):
        return m.group("cause").strip(" ,"), _clause(m.group("effect")), m.group("verb")
    return None


def cause_and_effect(sentence: str) -> tuple[str, str, str | None] | None:
    """(cause, effect, linking verb or None for 'because') of a sentence that states them about a subject
    of its own, each side long enough to ask about; else None."""
    found = _cause_and_effect(sentence)
    if not found or not stands_alone(sentence) or len(found[0].split()) < 2 or not found[1]:
        return None
    return found


def cause_effect_forms(sentence: str) -> list[dict]:
    """The cause asked from the effect (cause_effect) and the effect from the cause
    (reverse_cause_effect); a side that opens with a pronoun is not asked about ("because it ..."
    means nothing without its sentence)."""
    if (found := cause_and_effect(sentence)) is None:
        return []
    cause, effect, verb = found
    pairs = []
    if verb is None:  # "E because C": ask why E; and what C brings about
        pairs.append(
            _pair(
                "cause_effect",
                f"According to the passage, why is it that {_lower_first(effect)}?",
                f"Because {_lower_first(cause)}.",
            )
        )
        if not _PRONOUN.match(cause):
            pairs.append(
                _pair(
                    "reverse_cause_effect",
                    f"According to the passage, what happens because {_lower_first(cause)}?",
                    f"{_upper_first(effect)}.",
                )
            )
    else:  # "C leads to E": the sentence's own direction first
        pairs.append(
            _pair(
                "reverse_cause_effect",
                f"According to the passage, what does {_lower_first(cause)} {_BASE_VERB[verb]}?",
                f"{_upper_first(effect)}.",
            )
        )
        if not _PRONOUN.match(effect):
            pairs.append(
                _pair(
                    "cause_effect",
                    f"According to the passage, what {verb} {_lower_first(effect)}?",
                    f"{_upper_first(cause)}.",
                )
            )
    return pairs


# --- clozes -------------------------------------------------------------------------------------

_WORD = re.compile(r"(?<![\w\-])[A-Za-z][A-Za-z]*(?:-[A-Za-z0-9]+)*(?![\w\-])")
# Long but generic words make poor blanks: the sentence, not the subject, would give them away.
_GENERIC = frozenset(
    """because between through throughout usually different another without within around
therefore however whatever whenever whether although called several commonly typically together rather almost
during before toward towards across itself themselves against either neither example unless become becomes
should would could cannot amount number certain always another various possible particular""".split()
)
_VERB_OBJECT = frozenset("the a an its their his her that one two each every all both this these".split())
_VERB_SUBJECT = frozenset("to can may must will cannot does do did".split())


def _cloze_spans(sentence: str) -> list[tuple[int, int, bool]]:
    """(start, end, reads as a verb) of each candidate blank, best first (see `cloze_keys`)."""
    if not stands_alone(sentence) or len(sentence) < 40:
        return []
    # Units belong to the quantity forms: "2 ____" teaches nothing about the subject.
    in_quantity = [range(*m.span()) for m in _QUANTITY.finditer(sentence)]
    found = list(_WORD.finditer(sentence))
    words = [m.group() for m in found]
    counts: dict[str, int] = {}
    for w in words:
        counts[w.lower()] = counts.get(w.lower(), 0) + 1
    ranked: dict[str, tuple] = {}
    for i, (w, m) in enumerate(zip(words, found)):
        low = w.lower()
        if (
            i == 0
            or len(w) < 6
            or counts[low] > 1
            or low in FUNCTION_WORDS
            or low in _GENERIC
            or low in _LAYOUT
            or any(m.start() in span for span in in_quantity)
        ):
            continue
        after = words[i + 1].lower() if i + 1 < len(words) else ""
        verb_like = (
            (low.endswith(("ly", "ed", "ize", "izes")) and "-" not in w)
            or after in _VERB_OBJECT
            or words[i - 1].lower() in _VERB_SUBJECT
        )
        ranked[w] = (not verb_like, len(w) + 2 * w[0].isupper(), w, (*m.span(), verb_like))
    return [rank[3] for rank in sorted(ranked.values(), reverse=True)]


def cloze_keys(sentence: str) -> list[str]:
    """Candidate blanks, best first: long words (usually the technical terms), a name (capitalised
    mid-sentence) ahead of others of its length; words that read as verbs or adverbs last ("produces
    an", "to form", "-ly", "-ed"). Never the first word, a generic or layout word, a unit of a
    quantity, nor a word the sentence repeats (its other occurrence would give the answer away)."""
    return [sentence[start:end] for start, end, _ in _cloze_spans(sentence)]


def cloze_forms(sentence: str) -> list[dict]:
    """One fill-in-the-blank pair per key term, best first."""
    return [
        _pair("cloze", f"Fill in the blank: {sentence[:start]}____{sentence[end:]}", sentence[start:end])
        for start, end, _ in _cloze_spans(sentence)
    ]


COMPLETION, COMPLETION_END = "Complete the statement: ", " ..."


_NEXT_WORD = re.compile(r"\s*(\w+)")


def _ends_phrase(sentence: str, end: int) -> bool:
    """True when the word ending at `end` ends its phrase: punctuation or a function word follows it,
    not the noun it modifies ("cell-surface receptors", "thermal energy")."""
    after = _NEXT_WORD.match(sentence, end)
    return after is None or after.group(1).lower() in FUNCTION_WORDS


def completion_forms(sentence: str) -> list[dict]:
    """One complete-the-statement pair per key term: the sentence up to the term, the term to recall.
    The same fact as the cloze, asked the way a reader recalls it: from what comes before. The statement
    up to the term says something (two content words or more); the term is no verb and ends its phrase:
    its answer is whole, where a cloze shows the words after the blank."""
    return [
        _pair("completion", f"{COMPLETION}{sentence[:start].rstrip()}{COMPLETION_END}", sentence[start:end])
        for start, end, verb_like in _cloze_spans(sentence)
        if len(sentence[:start].split()) >= 3
        and sum(w not in FUNCTION_WORDS for w in _words(sentence[:start])) >= 2
        and not verb_like
        and _ends_phrase(sentence, end)
    ]


def completion_prefix(question: str) -> str | None:
    """The sentence prefix a complete-the-statement question quotes, or None for any other question."""
    if question.startswith(COMPLETION) and question.endswith(COMPLETION_END):
        return question[len(COMPLETION) : -len(COMPLETION_END)]
    return None


# --- the whole rule set -------------------------------------------------------------------------


def _sentence_forms(sentence: str) -> tuple[list[dict], list[dict]]:
    """(forms of one sentence, best first; clozes held back for feedback). The first form of each
    fact comes first, then the other directions, then the clozes. A question states no fact, nor does a
    sentence with a web address; a pointer at a figure in brackets is dropped first."""
    if "?" in sentence[-3:] or _URL.search(sentence):
        return [], []
    sentence = _LAYOUT_REFERENCE.sub("", sentence)
    facts = [f for f in (definition_forms(sentence), quantity_forms(sentence), cause_effect_forms(sentence)) if f]
    ordered = [f[0] for f in facts] + [p for f in facts for p in f[1:]]
    asked_terms = {p["answer"].lower() for p in ordered if p["kind"] == "reverse_definition"}
    clozes = [p for p in cloze_forms(sentence) if p["answer"].lower() not in asked_terms]
    completions = [p for p in completion_forms(sentence) if p["answer"].lower() not in asked_terms]
    return (
        ordered + clozes[:CLOZES_PER_SENTENCE] + completions[:CLOZES_PER_SENTENCE],
        clozes[CLOZES_PER_SENTENCE:] + completions[CLOZES_PER_SENTENCE:],
    )


def _interleave(per_sentence: list[list[dict]]) -> list[dict]:
    """The first form of every sentence, then the second of every sentence, and so on: a list cut
    short still covers the passage's facts before it covers any fact twice."""
    out: list[dict] = []
    for depth in range(max((len(forms) for forms in per_sentence), default=0)):
        out += [forms[depth] for forms in per_sentence if depth < len(forms)]
    return out


def heuristic_pairs(passage: str, max_pairs: int = 4, known: set[str] | None = None) -> list[dict]:
    """Up to `max_pairs` pairs from the passage, in a deterministic order that interleaves facts and
    forms (see the module docstring). Pairs whose answer is a layout word are dropped.

    With `known` questions (a feedback prompt lists the ones the student already has), those are
    skipped and the held-back forms follow: clozes on each sentence's further key terms, so a
    feedback round asks the weak topic's facts in ways the student has not seen."""
    per_sentence = [_sentence_forms(s) for s in sentences(passage)]
    pairs = _interleave([forms for forms, _ in per_sentence])
    if known is not None:
        pairs += _interleave([held_back for _, held_back in per_sentence])
    out, asked = [], set(known or ())
    for pair in pairs:
        if len(out) == max_pairs:
            break
        if pair["question"] not in asked and not is_layout_answer(pair["answer"]):
            out.append(pair)
            asked.add(pair["question"])
    return out
