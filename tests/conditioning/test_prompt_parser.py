"""The A1111 prompt language as text, against A1111 1.10's documented behaviour.

Expected values come from A1111 `modules/prompt_parser.py`: the doctests of `parse_prompt_attention` and
`get_learned_conditioning_prompt_schedules` (quoted as they are written there, marked "doctest"), and the output of
that module's grammar and functions run on the other prompts (marked "A1111 output").
"""

import pytest

from sdart.conditioning import parse_weights, prompt_schedule


def weights(text):
    return [(f.text, "BREAK" if f.is_break else f.weight) for f in parse_weights(text)]


# --- emphasis -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    # doctests
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [("a ", 1.0), ("house", 1.5730000000000004), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55),
      (", sun, ", 1.1), ("sky", 1.4641000000000006), (".", 1.1)]),
    # A1111 output
    ("((x))", [("x", 1.2100000000000002)]),
    ("[[x]]", [("x", 0.8264462809917354)]),
    ("[unbalanced", [("unbalanced", 0.9090909090909091)]),
    ("a ((b) c", [("a ", 1.0), ("b", 1.2100000000000002), (" c", 1.1)]),  # the open bracket applies to the rest
    ("(x : 1.5 )", [("x ", 1.5)]),
    ("(x:1.3) [(y)]", [("x", 1.3), (" y", 1.0)]),
    ("(a:b)", [("a:b", 1.1)]),  # a weight that is not a number is text
    ("x:1.2) y", [("x:1.2) y", 1.0)]),  # a closing bracket never opened is text
    ("]x)", [("]x)", 1.0)]),
    ("a\\q b", [("aq b", 1.0)]),  # a backslash before anything but a bracket or backslash is dropped
    ("a \\\\ b", [("a \\ b", 1.0)]),
    ("", [("", 1.0)]),
])
def test_emphasis_weights(text, expected):
    assert weights(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    # A1111 output: BREAK is a word of its own, upper case; it closes the chunk even when nothing is before it
    ("a BREAK b", [("a", 1.0), ("BREAK", "BREAK"), ("b", 1.0)]),
    ("BREAK a", [("", 1.0), ("BREAK", "BREAK"), ("a", 1.0)]),
    ("a BREAK BREAK b", [("a", 1.0), ("BREAK", "BREAK"), ("", 1.0), ("BREAK", "BREAK"), ("b", 1.0)]),
    ("aBREAKb", [("aBREAKb", 1.0)]),
    ("a break b", [("a break b", 1.0)]),
])
def test_break(text, expected):
    assert weights(text) == expected


def test_break_inside_brackets_is_still_a_break():
    """A1111 multiplies the BREAK marker's weight there, which turns it into the word "BREAK" with weight -1.1;
    sdart keeps it a BREAK and weights the text around it."""
    assert weights("(a BREAK b)") == [("a", 1.1), ("BREAK", "BREAK"), ("b", 1.1)]


# --- prompt editing and alternation -------------------------------------------------------------------------


@pytest.mark.parametrize(("prompt", "expected"), [
    # doctests, 10 steps
    ("test", [(10, "test")]),
    ("a [b:3]", [(3, "a "), (10, "a b")]),
    ("a [b: 3]", [(3, "a "), (10, "a b")]),
    ("a [[[b]]:2]", [(2, "a "), (10, "a [[b]]")]),
    ("[(a:2):3]", [(3, ""), (10, "(a:2)")]),
    ("a [b : c : 1] d", [(1, "a b  d"), (10, "a  c  d")]),
    ("a[b:[c:d:2]:1]e", [(1, "abe"), (2, "ace"), (10, "ade")]),
    ("a [unbalanced", [(10, "a [unbalanced")]),
    ("a [b:.5] c", [(5, "a  c"), (10, "a b c")]),
    ("((a][:b:c [d:3]", [(3, "((a][:b:c "), (10, "((a][:b:c d")]),
    ("[a|(b:1.1)]", [(1, "a"), (2, "(b:1.1)"), (3, "a"), (4, "(b:1.1)"), (5, "a"), (6, "(b:1.1)"), (7, "a"),
                     (8, "(b:1.1)"), (9, "a"), (10, "(b:1.1)")]),
    ("[fe|]male", [(1, "female"), (2, "male"), (3, "female"), (4, "male"), (5, "female"), (6, "male"),
                   (7, "female"), (8, "male"), (9, "female"), (10, "male")]),
    ("[fe|||]male", [(1, "female"), (2, "male"), (3, "male"), (4, "male"), (5, "female"), (6, "male"),
                     (7, "male"), (8, "male"), (9, "female"), (10, "male")]),
    # A1111 output, 10 steps
    ("a [{b|d{:.5] c", [(10, "a [{b|d{:.5] c")]),  # the doctest's "not handling this" case: a "|" outside [..|..]
    ("a | b", [(10, "a | b")]),  # ... leaves the whole prompt as typed
    ("[a:b:1.0] c", [(10, "a c")]),  # a "." makes a fraction: 1.0 × 10 steps, never switches
    ("[a:b:1.5]", [(10, "a")]),  # fractions past 1 are clamped to the last step
    ("[a:b:0]", [(10, "b")]),  # step 0: the second text from the start
    ("[a:b:-1]", [(10, "b")]),
    ("[a:b:1e1]", [(10, "a")]),  # no ".": a step number (10)
    ("[a:3:5]", [(5, "a"), (10, "3")]),
    ("[a:b:c:3]", [(10, "[a:b:c:3]")]),  # not an edit: literal
    ("[a:(b:3]", [(10, "[a:(b:3]")]),
    ("(a|b)", [(10, "(a|b)")]),
    ("[a:b:2] x (y:1.2)", [(2, "a x (y:1.2)"), (10, "b x (y:1.2)")]),  # emphasis passes through as text
    ("(([a:b:1]))", [(1, "((a))"), (10, "((b))")]),
    ("\\[a:b:2\\]", [(10, "\\[a:b:2\\]")]),  # escaped brackets are text
])
def test_schedule_at_10_steps(prompt, expected):
    assert prompt_schedule(prompt, 10) == expected


def test_fraction_of_steps_is_int_of_the_product():
    """A1111: int(0.3 × steps); 0.3 × 25 = 7.5 → 7, 0.3 × 3 = 0.9 → 0 (from the start)."""
    assert prompt_schedule("[red:blue:0.3]", 25) == [(7, "red"), (25, "blue")]
    assert prompt_schedule("[red:blue:0.3]", 3) == [(3, "blue")]


def test_step_number_past_the_end_never_switches():
    assert prompt_schedule("[red:blue:30]", 20) == [(20, "red")]


def test_nested_alternation_counts_one_global_step():
    """A1111 output: the inner [b|c] picks by the same step as the outer, so with two options each the outer's
    second option always meets the inner's second: "b" never appears."""
    assert prompt_schedule("[a|[b|c]]", 4) == [(1, "a"), (2, "c"), (3, "a"), (4, "c")]


def test_alternation_inside_an_edit():
    """A1111 output: [[a|b]:c:0.4] alternates until step 4, then holds c."""
    assert prompt_schedule("[[a|b]:c:0.4]", 10) == [(1, "a"), (2, "b"), (3, "a"), (4, "b")] + [
        (step, "c") for step in range(5, 11)]


def test_alternation_and_edit_side_by_side():
    assert prompt_schedule("[a|b] [c:d:0.5]", 6) == [(1, "a c"), (2, "b c"), (3, "a c"), (4, "b d"), (5, "a d"),
                                                    (6, "b d")]


def test_the_A1111_example():
    """The schedule in the comment at the top of A1111's prompt_parser.py, at 100 steps."""
    prompt = ("fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75][ in foreground::0.6]"
              "[ in background:0.25] [shoddy:masterful:0.5]")
    assert prompt_schedule(prompt, 100) == [
        (25, "fantasy landscape with a mountain and an oak in foreground shoddy"),
        (50, "fantasy landscape with a lake and an oak in foreground in background shoddy"),
        (60, "fantasy landscape with a lake and an oak in foreground in background masterful"),
        (75, "fantasy landscape with a lake and an oak in background masterful"),
        (100, "fantasy landscape with a lake and a christmas tree in background masterful"),
    ]


def test_steps_must_be_positive():
    with pytest.raises(ValueError, match="steps"):
        prompt_schedule("a", 0)
