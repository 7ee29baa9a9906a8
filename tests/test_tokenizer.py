"""tokenizer.py: ByT5's byte ids and the padded widths every batch is cut to."""
import pytest

from tokenizer import TEXT_PAD_MULTIPLE, round_up, tokenize


@pytest.mark.parametrize("n, multiple, padded", [
    (0, 16, 0), (1, 16, 16), (16, 16, 16), (17, 16, 32), (65, 64, 128)])
def test_round_up_to_the_next_multiple(n, multiple, padded):
    assert round_up(n, multiple) == padded


def test_bytes_are_shifted_by_three_then_eos_then_padding():
    ids, mask = tokenize(["ab", "é"], max_length=256)  # é is two UTF-8 bytes: c3 a9
    assert ids.shape == mask.shape == (2, TEXT_PAD_MULTIPLE)
    assert ids[0, :4].tolist() == [ord("a") + 3, ord("b") + 3, 1, 0]
    assert ids[1, :4].tolist() == [0xC3 + 3, 0xA9 + 3, 1, 0]
    assert mask.sum(1).tolist() == [3, 3]
    assert not ids[:, 3:].any()


def test_width_is_the_longest_text_rounded_up_and_capped_at_max_length():
    ids, mask = tokenize(["x" * 70], max_length=256)  # 71 tokens with EOS
    assert ids.shape[1] == 128 and int(mask.sum()) == 71
    ids, mask = tokenize(["x" * 300], max_length=256)
    assert ids.shape[1] == 256 and int(mask.sum()) == 256
    assert ids[0, -1].item() == 1  # truncated, still ends with EOS

