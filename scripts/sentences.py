"""Seeded English sentences with exactly known words, for corpora that need no download.

LJSpeech-like in length: a clipped normal number of words (mean 17, 10..38), numbers written
as words, questions and statements, many clauses. The same seed gives the same sentences.

    from scripts.sentences import generate_sentences
    generate_sentences(200, seed=0, max_words=12)
"""
from __future__ import annotations

import random

# espeak-ng at 160 wpm takes about 0.35 s a word plus 0.2 s, so 10..38 words is about
# 3..14 s; a mean of 17 words gives about LJSpeech's mean of 6.5 s
MIN_WORDS, MEAN_WORDS, SD_WORDS, MAX_WORDS = 10, 17, 6, 38

# The vocabulary. Transitive verbs are base/past pairs: questions take the base form.
NAMES = ("Margaret Thomas Eleanor Walter Alice Henry Clara Samuel Jack Arthur Lucy George Oliver "
         "Martha Frederick Agnes Benjamin Dorothy Edward Florence Charles William Louisa Robert "
         "Catherine James Emily Joseph Helen Daniel Rose Francis Grace Peter Ruth Susan").split()
PEOPLE = ("farmer teacher doctor sailor clerk judge soldier merchant baker captain officer lawyer "
          "student nurse poet painter driver guard prisoner witness carpenter banker messenger "
          "neighbor stranger visitor traveler priest servant mayor engineer detective musician "
          "gardener shepherd widow boy girl manager porter printer reporter hunter pilot").split()
THINGS = ("letter window table lamp basket ladder wagon horse dog clock book key coat hat boat "
          "bottle candle carpet chair door engine fence hammer jacket kettle map newspaper "
          "notebook pencil picture rope shovel spoon stone suitcase ticket umbrella wheel wallet "
          "blanket box bucket cabinet camera bowl coin cup desk drawer envelope flag glove guitar "
          "jar lantern mirror needle painting parcel pillow plate radio ring saddle scarf shirt "
          "shoe sign sofa stamp statue sword telescope tent towel tray trumpet trunk violin watch "
          "whistle bicycle anchor bench bridle cake cloak compass crate curtain drum feather gate "
          "helmet kite trophy oar piano pipe ribbon sack shield sled").split()
PERSON_ADJ = ("old young tired clever nervous proud curious gentle angry patient famous strange "
              "quiet careful cheerful anxious busy lonely wealthy poor silent eager stubborn "
              "generous cautious brave clumsy polite sleepy worried friendly serious").split()
THING_ADJ = ("small large heavy bright dark broken empty golden wooden silver narrow ancient "
             "modern dusty polished faded shiny cheap expensive tiny enormous crooked clean dirty "
             "rusty fragile sturdy warm cold valuable mysterious ordinary peculiar striped red "
             "blue green yellow purple white black brown little new precious familiar").split()
ADVERBS = ("quickly slowly quietly carefully suddenly gently eagerly calmly nervously patiently "
           "proudly happily sadly loudly softly politely secretly openly boldly bravely gladly "
           "anxiously silently easily finally briefly warmly firmly neatly hastily cheerfully "
           "reluctantly curiously wisely foolishly roughly").split()
TRANSITIVE = [v.split("/") for v in (
    "carry/carried open/opened close/closed repair/repaired paint/painted sell/sold buy/bought "
    "find/found lose/lost borrow/borrowed return/returned clean/cleaned deliver/delivered "
    "hide/hid polish/polished examine/examined wrap/wrapped lift/lifted drop/dropped fold/folded "
    "measure/measured weigh/weighed pack/packed move/moved push/pushed pull/pulled steal/stole "
    "mend/mended notice/noticed inspect/inspected collect/collected bring/brought send/sent "
    "keep/kept leave/left hold/held drag/dragged build/built break/broke fill/filled "
    "count/counted sketch/sketched admire/admired unlock/unlocked bury/buried share/shared "
    "throw/threw catch/caught replace/replaced study/studied order/ordered trade/traded "
    "guard/guarded test/tested seal/sealed load/loaded choose/chose forget/forgot").split()]
WENT = ("walked waited slept traveled arrived worked sat stood spoke sang smiled rested rushed "
        "wandered listened stayed shouted danced swam rode knelt whispered paused").split()
CITIES = ("London Paris Boston Chicago Dublin Glasgow Denver Madrid Vienna Berlin Geneva Oxford "
          "Bristol Toronto Sydney Lisbon Cairo Naples Venice Seattle Portland Houston Atlanta "
          "Memphis Richmond Edinburgh Liverpool Manchester Philadelphia Baltimore").split()
SITES = ("station market library harbor courthouse village garden bridge valley school hospital "
         "factory church prison river forest kitchen barn cottage hotel museum theater bakery "
         "castle island orchard meadow tavern warehouse lighthouse").split()
PREPS = "near behind beside inside outside across toward beyond along past".split()
TIMES = ("yesterday|last winter|on Monday|every morning|that evening|at dawn|before noon|"
         "in the spring|after dinner|on Sunday|during the storm|late at night|"
         "early in the morning|last summer|on Friday afternoon|the next day|a week later|"
         "in October|at midnight|after the war").split("|")
MOVED = "walked traveled rushed wandered swam rode ran drove marched sailed".split()
SUBORDINATORS = "when|because|although|while|after|before|since|as soon as|even though".split("|")
JOINERS = ["and", "but", "so", "and then", "yet"]
ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
        "fourteen fifteen sixteen seventeen eighteen nineteen").split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def num_to_words(n: int) -> str:
    """0..9999 in American words without "and": 2048 -> "two thousand forty-eight"."""
    assert 0 <= n <= 9999, n
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("-" + ONES[n % 10] if n % 10 else "")
    big, rest = (n // 1000, "thousand") if n >= 1000 else (n // 100, "hundred")
    tail = n % 1000 if n >= 1000 else n % 100
    return f"{ONES[big]} {rest}" + (f" {num_to_words(tail)}" if tail else "")


def _count(r: random.Random) -> int:
    # mostly small counts, as in prose; now and then hundreds or thousands
    return r.randint(2, r.choice([12, 12, 20, 99, 999, 9999]))


def _plural(noun: str) -> str:  # enough for THINGS, which holds no "-y" or irregular nouns
    return noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _person(r: random.Random) -> str:
    if r.random() < 0.4:
        return r.choice(NAMES)
    noun = f"{r.choice(PERSON_ADJ)} {r.choice(PEOPLE)}" if r.random() < 0.5 else r.choice(PEOPLE)
    return r.choice(["the " + noun, _a(noun)])


def _thing(r: random.Random) -> str:
    roll = r.random()
    if roll < 0.2:
        return f"{num_to_words(_count(r))} {_plural(r.choice(THINGS))}"
    noun = r.choice(THINGS) if roll < 0.55 else f"{r.choice(THING_ADJ)} {r.choice(THINGS)}"
    return r.choice(["the " + noun, _a(noun), "the " + noun])


def _place(r: random.Random) -> str:
    if r.random() < 0.35:
        return "in " + r.choice(CITIES)
    return f"{r.choice(PREPS)} the {r.choice(SITES)}"


def _maybe(r: random.Random, p: float, make) -> str:
    return " " + make(r) if r.random() < p else ""


def _clause(r: random.Random, depth: int = 0) -> str:
    """One statement without final punctuation; `depth` stops reported speech nesting."""
    form = r.randrange(9 if depth == 0 else 8)
    who, (_, past), went = _person(r), r.choice(TRANSITIVE), r.choice(WENT)
    if form in (0, 1):
        adv = _maybe(r, 0.3, lambda r: r.choice(ADVERBS))
        return f"{who}{adv} {past} {_thing(r)}" + _maybe(r, 0.5, _place)
    if form == 2:
        return f"{who} {went} {r.choice(ADVERBS)} {_place(r)}"
    if form == 3:
        return f"{who} was {r.choice(PERSON_ADJ)}" + _maybe(r, 0.6, lambda r: r.choice(TIMES))
    if form == 4:
        return f"the {r.choice(THINGS)} {r.choice(['was', 'seemed'])} {r.choice(THING_ADJ)}"
    if form == 5:
        return f"the {r.choice(PEOPLE)} who {past} {_thing(r)} {went} {_place(r)}"
    if form == 6:
        return f"{who} {past} {_thing(r)}, {_thing(r)}, and {_thing(r)}"
    if form == 7:
        count, how = num_to_words(_count(r)), r.randrange(3)
        if how == 0:
            return f"{who} {r.choice(MOVED)} {count} {r.choice(['miles', 'feet'])} {_place(r)}"
        if how == 1:
            return f"{who} paid {count} dollars for {_thing(r)}"
        return f"{who} waited {count} {r.choice(['minutes', 'hours', 'days'])} {_place(r)}"
    verb = r.choice(["said", f"told the {r.choice(PEOPLE)}", "wrote", "heard"]) + " that"
    return f"{who} {verb} {_clause(r, depth + 1)}"


# The question forms, each drawing its words left to right: (r, who, base verb) -> question.
QUESTION_FORMS = (
    lambda r, who, base: f"did {who} {base} {_thing(r)}" + _maybe(r, 0.6, _place),
    lambda r, who, base: f"{r.choice(['why', 'where', 'when'])} did {who} {base} {_thing(r)}",
    lambda r, who, base: f"how many {_plural(r.choice(THINGS))} did {who} {base} "
                         f"{r.choice(TIMES)}",
    lambda r, who, base: f"was {who} {r.choice(PERSON_ADJ)} when {_clause(r, 1)}",
    lambda r, who, base: f"who {r.choice(TRANSITIVE)[1]} {_thing(r)} {_place(r)}",
)


def _question(r: random.Random) -> str:
    who, (base, _) = _person(r), r.choice(TRANSITIVE)
    return QUESTION_FORMS[r.randrange(len(QUESTION_FORMS))](r, who, base)


def _sentence(r: random.Random) -> str:
    form = r.random()
    if form < 0.15:
        text = _question(r) + "?"
    elif form < 0.25:
        text = f"{r.choice(SUBORDINATORS)} {_clause(r, 1)}, {_question(r)}?"
    elif form < 0.45:
        text = _clause(r) + "."
    elif form < 0.65:
        text = f"{_clause(r)}, {r.choice(JOINERS)} {_clause(r)}."
    elif form < 0.8:
        text = f"{r.choice(SUBORDINATORS)} {_clause(r, 1)}, {_clause(r)}."
    elif form < 0.9:
        text = f"{r.choice(TIMES)}, {_clause(r)} {r.choice(SUBORDINATORS)} {_clause(r, 1)}."
    else:  # three clauses, for the long tail of lengths
        text = (f"{r.choice(SUBORDINATORS)} {_clause(r, 1)}, {_clause(r, 1)}, "
                f"{r.choice(JOINERS)} {_clause(r, 1)}.")
    return text[0].upper() + text[1:]


def generate_sentences(n: int, seed: int = 0, max_words: int = MAX_WORDS) -> list[str]:
    """`n` distinct sentences whose word counts follow a clipped normal, same for a seed;
    `max_words` caps the length (the CPU demo uses short sentences to train in minutes)."""
    r, seen = random.Random(seed), {}
    for _ in range(100 * n + 1000):
        if len(seen) == n:
            return list(seen)
        # the templates alone give too many short sentences: draw a length, then a sentence
        # near it, so durations spread like LJSpeech's instead of like the templates'
        target = min(max(round(r.gauss(MEAN_WORDS, SD_WORDS)), MIN_WORDS), max_words)
        for _ in range(100):
            text = _sentence(r)
            words = len(text.split())
            if abs(words - target) <= 1 and MIN_WORDS <= words <= max_words:
                seen.setdefault(text, None)  # a dict keeps draw order, so the list is seeded
                break
    raise RuntimeError(f"generated only {len(seen)} distinct sentences of {n}")
