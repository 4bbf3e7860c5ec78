from pyservecli.bench.sonnet import INSTRUCTION, build_prompts

LINES = [f"Line {i} of a sonnet about the sea and the sky" for i in range(40)]


def count_chars(text):
    return len(text)


def test_prompts_share_the_prefix_and_hit_the_length():
    prompts = build_prompts(LINES, count_chars, input_len=550, prefix_len=200, num_prompts=5)
    assert len(prompts) == 5
    assert all(p.startswith(INSTRUCTION + LINES[0] + "\n") for p in prompts)
    prefix = INSTRUCTION + "".join(line + "\n" for line in LINES[:3])
    assert all(p.startswith(prefix) for p in prompts)
    assert all(abs(len(p) - 550) <= 50 for p in prompts)  # within one line of the target
    assert len(set(prompts)) > 1  # random bodies, not one repeated prompt


def test_deterministic_for_a_seed():
    a = build_prompts(LINES, count_chars, 550, 200, 3, seed=42)
    assert a == build_prompts(LINES, count_chars, 550, 200, 3, seed=42)
    assert a != build_prompts(LINES, count_chars, 550, 200, 3, seed=7)
