"""scripts/sentences.py: the seeded generator's sentences and number words."""
import re

from conftest import load_script

gen = load_script("sentences")


def test_generator_seeded_varied_and_wordy():
    assert gen.generate_sentences(50, seed=1) == gen.generate_sentences(50, seed=1)
    assert gen.generate_sentences(50, seed=1) != gen.generate_sentences(50, seed=2)
    sentences = gen.generate_sentences(2000, seed=0)
    assert len(set(sentences)) == 2000
    words = {w.lower() for s in sentences for w in re.findall(r"[A-Za-z']+", s)}
    assert len(words) >= 300, len(words)
    assert not any(ch.isdigit() for s in sentences for ch in s)
    assert sum(s.endswith("?") for s in sentences) > 100  # questions, not just statements
    lengths = [len(s.split()) for s in sentences]
    assert min(lengths) >= gen.MIN_WORDS and max(lengths) <= gen.MAX_WORDS
    assert 15 <= sum(lengths) / len(lengths) <= 19


def test_num_to_words():
    expect = {0: "zero", 13: "thirteen", 40: "forty", 58: "fifty-eight", 100: "one hundred",
              305: "three hundred five", 1000: "one thousand",
              2048: "two thousand forty-eight", 9999: "nine thousand nine hundred ninety-nine"}
    assert {n: gen.num_to_words(n) for n in expect} == expect
